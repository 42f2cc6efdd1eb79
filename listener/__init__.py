"""Revenue ASI outbox daemon: touch_runs → LISTEN/NOTIFY → providers → core_memory_events.

The rooms, and which may import which (tests/test_layers.py holds the tree to it):

  rules/      pure rules: vocabulary, payload, decision, sending rules, messages, contacts, JSON bounds.
              Imports nothing of the project outside rules/, and no I/O library.
  store/      the database: connections, the embedded server, migrations (from the top-level sql/), the named
              queries (store/queries/*.sql) and the typed reads built on them. Imports rules/ and settings.
  engine/     the daemon and its services: dispatch, completer, reactions, sweep, orchestrators, reconcile,
              enrichment, appointments, replay, jobs. Imports rules/, store/, providers/ and settings.
  providers/  Twilio, ElasticEmail and the loopback sandbox, behind one Protocol. Imports rules/ and settings.
  inbound/    what providers tell us (status mapping, reply classifier): rules/ only.
  intents/    Command OS intents shared by the CLI, the API and the console: rules/, store/, engine/.
  web/        the HTTP application: webhooks, dashboard, JSON API, health.
  cli.py, demo.py, testing.py, settings.py — the edges and the one settings object.
"""

__version__ = "0.1.0"
