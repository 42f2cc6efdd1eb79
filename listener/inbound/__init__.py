"""Inbound: what providers tell us back (SPEC §12) — reply classification, status mapping, recording."""
