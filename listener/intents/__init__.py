"""The seed's Command OS intents, one implementation each, shared by the CLI, the JSON API and Command OS:
`system.status` (status.py), `lead.inspect` and `lead.enroll` (lead.py); `command_os.py` names them, checks
their arguments and resolves English or Spanish text to one of them."""
