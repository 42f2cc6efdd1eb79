"""Background duties of the daemon, one small service each."""
