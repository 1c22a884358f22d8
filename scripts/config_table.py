"""Print the README's configuration table from the settings class, so the two cannot drift.

Usage: python scripts/config_table.py [--write]
(prints the table, or rewrites it in README.md; tests/unit/test_docs.py checks the README)
"""

import re
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from python_worker.bootstrap import Settings

GENERATED_DEFAULTS = {
    "worker_id": "hostname + random suffix",
    "rabbitmq_prefetch": "`WORKER_CAPACITY` + `STATUS_MAX_IN_FLIGHT` + 10",
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


README = Path(__file__).resolve().parents[1] / "README.md"
TABLE = re.compile(r"(<!-- config-table:start[^>]*-->\n)(.*?)(<!-- config-table:end -->)", re.S)


def readme_table() -> str | None:
    match = TABLE.search(README.read_text(encoding="utf-8"))
    return match.group(2).strip() if match else None


def write_readme_table() -> None:
    text = README.read_text(encoding="utf-8")
    table = config_table()
    README.write_text(
        TABLE.sub(lambda m: m.group(1) + table + "\n" + m.group(3), text), encoding="utf-8"
    )


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write_readme_table()
    else:
        print(config_table())
