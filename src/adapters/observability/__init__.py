"""Observability adapters: Prometheus metrics and the health endpoints."""
