"""The job domain: the job model, the built-in handlers and their errors. Pure Python, no I/O."""
