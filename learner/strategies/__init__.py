"""Retraining strategies. Every module in this package registers its strategies."""
from __future__ import annotations

import importlib
import pkgutil

from learner.strategies.base import REGISTRY, Strategy

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Strategy"]
