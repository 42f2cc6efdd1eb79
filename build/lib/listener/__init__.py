"""Revenue ASI outbox daemon: touch_runs → LISTEN/NOTIFY → providers → core_memory_events."""

__version__ = "0.1.0"
