"""Test helpers shared by the integration tests (private RabbitMQ node, TCP proxy)."""
