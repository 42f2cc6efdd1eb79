"""Command OS intents (SPEC §14, §18), one implementation each, shared by the CLI, the JSON API and the console:
`system.status` (status.py); `lead.inspect`, `lead.enroll`, `lead.stop`, `lead.suppress` (lead.py); `campaign.list`,
`campaign.pause`, `campaign.resume` and the lookup of a campaign by name (campaign.py); `touch.cancel` (touch.py);
`reactions.retry` (reactions.py); `report.funnel` (report.py). registry.py names them with their pydantic argument
schemas, whether they write, and their preview; command_os.py resolves English or Spanish text to one of them and
runs it (preview, confirm, record in command_runs); llm.py is the optional model asked when the rules find nothing;
errors.py says what each refusal answers (404, 409, 422, 503)."""
