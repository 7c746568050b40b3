"""The packages form layers: replay_data <- learner <- simulator. No import runs back up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["replay_data", "learner", "simulator"]  # each may import only those before it


def imported_packages(path: Path) -> set[str]:
    """Top-level names a module imports, wherever the import stands (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_runs_back_up_the_layers(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & above) for path in (ROOT / layer).rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


@pytest.mark.parametrize("layer", ["replay_data", "learner"])
def test_library_layers_never_exit_the_process(layer):
    """Only the CLI decides to exit; the layers below raise their own errors."""
    exits = [
        str(path.relative_to(ROOT))
        for path in (ROOT / layer).rglob("*.py")
        if any(isinstance(node, ast.Name) and node.id == "SystemExit" for node in ast.walk(ast.parse(path.read_text())))
    ]
    assert exits == []


@pytest.mark.parametrize("package", LAYERS)
def test_every_public_name_resolves(package):
    """`__all__` names objects that exist where the package says (a moved module breaks this)."""
    import importlib

    module = importlib.import_module(package)
    assert module.__all__ and all(getattr(module, name) is not None for name in module.__all__)
