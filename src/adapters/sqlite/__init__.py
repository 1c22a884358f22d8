"""SQLite adapters: the durable status outbox and the memory of recent jobs."""
