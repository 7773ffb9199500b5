"""Failure drills: the operator's bad day, as commands of the project (`make drill`).

Each drill runs against PostgreSQL (DATABASE_URL, a database of its own) with real processes
on loopback — gunicorn, `flask worker`, `flask cron`, a Redis it starts and stops itself, an
SMTP sink — bounded in time. It prints its figures and returns the invariants that broke:
every item decided at most once and its final state matching its decision events, every outbox
message processed, no mail sent twice and none missing, `audit verify` passing, and the
system draining by itself within a stated time. `python -m drills --short` is the form
`make test` runs on PostgreSQL; `make drill` runs the full form."""
