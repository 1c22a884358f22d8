"""Use cases and the ports they need: processing a job, running the worker. No I/O libraries."""
