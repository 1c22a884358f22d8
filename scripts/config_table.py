"""Print the README's configuration table from the settings class, so the two cannot drift.

Usage: python scripts/config_table.py   (tests/unit/test_docs.py checks the README against it)
"""

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bootstrap import Settings

GENERATED_DEFAULTS = {
    "worker_id": "hostname + random suffix",
    "rabbitmq_prefetch": "twice `WORKER_CAPACITY`",
}


def _default(name: str, value: Any) -> str:
    if name in GENERATED_DEFAULTS:
        return GENERATED_DEFAULTS[name]
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, Path):
        value = f"./{value}"
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def config_table() -> str:
    lines = ["| variable | meaning | default |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = None if field.default_factory else field.default
        lines.append(f"| `{name.upper()}` | {field.description} | {_default(name, default)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(config_table())
