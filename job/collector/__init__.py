"""The collector: ``inboxflow collect``, a small HTTP service (Starlette on uvicorn) that
turns the shop's page events and signed platform webhooks into validated events on the
job's ``events`` topic. It runs beside the Flink job, not inside it (README "Collector",
docs/DESIGN.md#collector)."""
