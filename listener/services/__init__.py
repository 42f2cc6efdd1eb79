"""The daemon's background duties, one small service each (River's internal/maintenance): each is a step run by
`base.run_service`, which owns the loop, the wake-ups and the backoff after errors."""
