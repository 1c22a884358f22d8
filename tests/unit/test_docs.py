"""The README's promises that code can check: its configuration table matches the settings."""

from scripts.config_table import config_table, readme_table


def test_readme_configuration_table_is_the_one_generated_from_the_settings():
    table = readme_table()

    assert table is not None, "README lost its config-table markers"
    assert table == config_table(), (
        "README configuration table is stale: run `python scripts/config_table.py --write`"
    )
