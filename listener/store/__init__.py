"""The database: connections and the embedded server, migrations from the top-level sql/, named queries."""
