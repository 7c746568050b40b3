"""Raw interaction logs -> prepared, period-cut event logs; synthetic streams."""

from __future__ import annotations

import importlib
from typing import Any

# The public surface: each name and the module that defines it. Imported on first use
# (PEP 562), so importing one submodule does not import the whole package.
_PUBLIC = {
    "ConfigError": "replay_data.typed_config",
    "InputError": "replay_data.rejects",
    "DataConfig": "replay_data.presets",
    "PhaseCounts": "replay_data.presets",
    "preset_names": "replay_data.presets",
    "load_preset": "replay_data.presets",
    "PreparedLog": "replay_data.prepared",
    "prepare": "replay_data.prepared",
    "load": "replay_data.prepared",
    "read": "replay_data.readers",
    "read_synthetic": "replay_data.synthetic",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
