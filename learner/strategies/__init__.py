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


def paper_lineup() -> list[str]:
    """Every strategy this package registers (not plug-ins registered elsewhere): SML, then the
    other methods, then SML's ablations, each in registration order. `rtsim paper` runs them all,
    so a strategy module added here joins the comparison by itself."""
    from learner.strategies.sml_ablations import ablations

    shipped = [name for name, cls in REGISTRY.items() if cls.__module__.startswith(f"{__name__}.")]
    return sorted(shipped, key=lambda name: (name != "sml", name in ablations()))


__all__ = [
    "REGISTRY",
    "MFStrategy",
    "NoSettings",
    "StrategiesSection",
    "Strategy",
    "paper_lineup",
    "register",
    "strategies_section",
]
