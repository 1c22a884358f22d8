"""The README's promises that code can check: its configuration table matches the settings."""

import re
from pathlib import Path

from scripts.config_table import config_table

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE = re.compile(r"<!-- config-table:start[^>]*-->\n(.*?)<!-- config-table:end -->", re.S)


def test_readme_configuration_table_is_the_one_generated_from_the_settings():
    match = TABLE.search(README.read_text())
    assert match, "README lost its config-table markers"

    assert match.group(1).strip() == config_table(), (
        "README configuration table is stale: run `python scripts/config_table.py` and paste it"
    )
