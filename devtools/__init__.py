"""Development tools: what tests, the benchmark and a local stack use, never the product.

Not part of the installed package (pyproject's `packages` does not list it), and an
import-linter contract keeps `python_worker` from importing it.
"""
