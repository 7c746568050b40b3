"""Presets: named YAML configs in configs/, and the phases of a run's periods."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from replay_data.typed_config import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PHASES = ("pretrain", "online", "validation", "test")


@dataclass(frozen=True)
class PhaseCounts:
    pretrain: int
    online: int
    validation: int
    test: int

    def validate(self) -> None:
        if self.pretrain < 1:
            raise ConfigError("phases.pretrain must be >= 1: every strategy starts from the pretrained base model")
        if min(self.online, self.validation, self.test) < 0:
            raise ConfigError(f"phase counts must be >= 0, got {self}")

    @property
    def total(self) -> int:
        return self.pretrain + self.online + self.validation + self.test

    def labels(self) -> list[str]:
        return [name for name in PHASES for _ in range(getattr(self, name))]


def default_phases(n_periods: int) -> PhaseCounts:
    """Other T: pretrain = first quarter, test = last quarter with its first third as validation."""
    if n_periods < 3:
        raise ConfigError(f"need at least 3 periods (pretrain, online, test), got {n_periods}")
    quarter = max(1, n_periods // 4)
    validation = round(quarter / 3)
    return PhaseCounts(quarter, n_periods - 2 * quarter, validation, quarter - validation)


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "equal_count"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Where events come from and how they are cut into periods."""

    dataset: str = "synthetic-news"
    input: str | None = None
    reader: dict[str, Any] = field(default_factory=dict)
    strict: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)
    schedule: ScheduleConfig = ScheduleConfig()
    periods: int | None = None  # T; extra schedule periods are cut off (and counted)
    phases: PhaseCounts | None = None

    def validate(self) -> None:
        if self.periods is not None and self.phases is not None and self.phases.total != self.periods:
            raise ConfigError(f"phases add up to {self.phases.total} periods but periods is {self.periods}")


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    return load_yaml(path)


def load_yaml(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:  # a folder, unreadable, binary
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"cannot read the config file {path}: {reason}; give a YAML file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data
