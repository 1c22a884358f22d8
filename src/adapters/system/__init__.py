"""The operating system's parts the worker uses as ports: its clock."""
