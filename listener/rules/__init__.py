"""Pure rules: no database, no network, no clock of their own. Imports only listener.rules and libraries."""
