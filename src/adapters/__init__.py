"""Adapters: each implements a port from `application.ports` and hides its vendor library."""
