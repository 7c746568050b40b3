"""Raw interaction logs -> prepared, period-cut event logs; synthetic streams."""

from __future__ import annotations

from replay_data.lazy import lazy_surface

# The public surface: each name and the module that defines it, imported on first use
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

__all__, __getattr__, __dir__ = lazy_surface(__name__, _PUBLIC)
