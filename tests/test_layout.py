"""The layout holds: logic without Beam, no import running back up, every package shipped."""

import ast
from pathlib import Path

from setuptools import find_packages

from tests.conftest import ROOT


def imported_modules(folder: Path):
    """(file, module) for every import anywhere in the Python files under ``folder``."""
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                yield from ((path, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                yield path, node.module


def offending(folder: str, forbidden: tuple):
    return [f"{path.relative_to(ROOT)} imports {module}"
            for path, module in imported_modules(ROOT / folder)
            if module.split(".")[0] in forbidden or module.startswith(forbidden)]


def test_logic_does_not_import_beam():
    assert offending("pipeline/logic", ("apache_beam", "pipeline.steps", "connectors")) == []


def test_lower_layers_do_not_import_the_pipeline():
    assert offending("common", ("connectors", "schemas")) == []
    for folder in ("connectors", "schemas", "common"):
        assert offending(folder, ("pipeline",)) == [], folder


def test_setup_ships_every_package():
    tree = ast.parse((ROOT / "setup.py").read_text())
    listed = next(node.value for node in ast.walk(tree)
                  if isinstance(node, ast.keyword) and node.arg == "packages")
    shipped = set(ast.literal_eval(listed))
    found = set(find_packages(str(ROOT), exclude=["tests", "tests.*", "benchmarks", "build*"]))
    assert shipped == found
