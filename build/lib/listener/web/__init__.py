"""The HTTP application served by `revenue-asi web` (SPEC §12, §14): webhooks, dashboard, JSON API, health."""
