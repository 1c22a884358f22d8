"""The command line, the worker's driving adapter: each command calls one part of the core."""
