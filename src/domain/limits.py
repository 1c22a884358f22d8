"""Every size limit a built-in handler enforces, so that no payload can make a job run for long."""

MAX_NUMBERS = 100_000
"""Most items in `payload.numbers`."""

DEFAULT_COUNT = 10
"""How many random numbers are generated when a calculation gives neither `numbers` nor `count`."""

MAX_COUNT = 100_000
"""Largest `payload.count` of generated numbers (the same bound as `MAX_NUMBERS`)."""

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer magnitude accepted as a number.

Every integer up to it is exact as a float too (so averages and mixed sums stay exact) and reads
back exactly in any JSON parser, JavaScript's included; larger values are sent as floats (`1e20`).
Without the bound a 5,000-digit integer would make arithmetic slow and results unreadable.
"""

MAX_SEED = 2**63 - 1
"""Largest `payload.seed` magnitude."""

MAX_STRING_LENGTH = 100_000
"""Most characters in one string value (a validated value, a string inside transform data)."""

MAX_PATTERN_LENGTH = 1_000
"""Most characters in a `regex` validation pattern."""

MAX_DEPTH = 32
"""Deepest nesting of objects and lists in transform data; the top-level object is depth 1."""

MAX_NODES = 100_000
"""Most values (objects, lists and scalars, counted together) in transform data."""

MAX_FIELDS = 1_000
"""Most entries in `payload.fields` or in `payload.exclude` of a `filter` transformation."""

MAX_FIELD_LENGTH = 1_000
"""Most characters in one `fields` or `exclude` entry."""
