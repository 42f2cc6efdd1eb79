"""The benchmark and chaos harness (issue 6): `python -m bench all|latency|throughput|scale|peer|limit|fair|pacing|
overhead|chaos`.

Everything runs on loopback and is started by the bench itself: a fresh embedded PostgreSQL, the SANDBOX providers
and the daemons, each in its own process. See docs/performance.md."""
