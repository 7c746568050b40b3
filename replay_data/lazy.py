"""Package surfaces imported on first use (PEP 562), shared by every rtsim package."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_surface(
    package: str, public: dict[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """(__all__, __getattr__, __dir__) for `package`, whose public names map to the modules
    that define them: importing one submodule does not import the whole package."""

    def __getattr__(name: str) -> Any:
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(public[name]), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(public))

    return list(public), __getattr__, __dir__
