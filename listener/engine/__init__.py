"""The daemon and its services (River's maintenance services: one small service per background duty)."""
