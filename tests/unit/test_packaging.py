"""pyproject.toml lists every package under src/, so the wheel holds them all."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_lists_every_package_under_src_as_part_of_python_worker():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(("python_worker", *init.parent.relative_to(ROOT / "src").parts))
        for init in (ROOT / "src").rglob("__init__.py")
    }

    assert config["package-dir"] == {"python_worker": "src"}
    assert set(config["packages"]) == on_disk
