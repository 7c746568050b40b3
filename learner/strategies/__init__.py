"""Retraining strategies. Every module in this package registers its strategies, each with
its own settings class; `strategies_section()` is the `learner.strategies` section they make."""

from __future__ import annotations

import importlib
import pkgutil

from learner.strategies.base import (
    REGISTRY,
    MFStrategy,
    NoSettings,
    StrategiesSection,
    Strategy,
    register,
    strategies_section,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "MFStrategy", "NoSettings", "StrategiesSection", "Strategy", "register", "strategies_section"]
