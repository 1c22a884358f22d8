"""HTTP adapters: the status API reporter, the orchestrator heartbeat sink and their stand-in."""
