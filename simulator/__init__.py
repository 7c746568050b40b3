"""The world around the learner: buses, the paced replay producer, runs, the CLI."""

from __future__ import annotations

import importlib
from typing import Any

# The public surface: each name and the module that defines it. Imported on first use
# (PEP 562), so importing one submodule does not import the whole package.
_PUBLIC = {
    "RunConfig": "simulator.config",
    "resolve": "simulator.config",
    "RunDir": "simulator.rundir",
    "run_embedded": "simulator.run",
    "open_bus": "simulator.bus",
    "main": "simulator.cli",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
