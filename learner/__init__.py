"""The system under test: period windows, models, strategies, evaluation, metrics."""

from __future__ import annotations

import importlib
from typing import Any

# The public surface: each name and the module that defines it. Imported on first use
# (PEP 562), so importing one submodule does not import the whole package.
_PUBLIC = {
    "LearnerConfig": "learner.config",
    "TrainSpec": "learner.config",
    "Engine": "learner.engine",
    "StrategyResult": "learner.engine",
    "StreamLearner": "learner.stream",
    "Strategy": "learner.strategies",
    "MFStrategy": "learner.strategies",
    "register": "learner.strategies",
    "REGISTRY": "learner.strategies",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
