"""Presets: named YAML configs shipped as package data in replay_data/preset_files/, and the
phases of a run's periods."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from replay_data import synthetic
from replay_data.preprocess import apply_steps
from replay_data.readers import check_options
from replay_data.schedules import check_schedule
from replay_data.typed_config import ConfigError, load_yaml_text, not_allowed

# the preset YAML files, package data read through importlib.resources (a wheel install has
# them too)
PRESET_FILES = resources.files(__package__) / "preset_files"
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

    def validate(self) -> None:
        check_schedule(self.kind, self.params)


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
        if self.periods is not None and self.periods < 3:
            raise not_allowed("periods", self.periods, "a run needs at least 3 periods (pretrain, online, test)")
        if self.periods is not None and self.phases is not None and self.phases.total != self.periods:
            raise ConfigError(f"phases add up to {self.phases.total} periods but periods is {self.periods}")
        if is_synthetic(self.dataset):
            check_synthetic_options(self.dataset, self.reader)
        else:
            check_options(self.dataset, self.reader)
        empty = pd.DataFrame({"ts": np.zeros(0, np.int64), "user": [], "item": []})
        try:
            apply_steps(empty, self.preprocess)  # checks every step's parameters on no rows
        except ConfigError as err:
            raise ConfigError(f"data.preprocess: {err}", located=True) from None


def is_synthetic(dataset: str) -> bool:
    """Whether `dataset` names a generated stream (data.reader then sets its world)."""
    return dataset in synthetic.PRESETS or dataset.startswith("synthetic")


def check_synthetic_options(dataset: str, options: dict[str, Any]) -> None:
    """data.reader of a synthetic dataset: world, seed, scale, chunk_rows and any
    SyntheticWorld parameter, each checked as the generator will use it."""
    path = "data.reader"
    fields = {f.name: f.type for f in dataclasses.fields(synthetic.SyntheticWorld)} | {
        "world": "str",
        "seed": "int",
        "scale": "float",
        "chunk_rows": "int",
    }
    unknown = sorted(set(options) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key {path}.{unknown[0]}; allowed keys here: {', '.join(sorted(fields))} (a synthetic world)",
            located=True,
        )
    world = options.get("world", dataset)
    if world not in synthetic.PRESETS:
        raise ConfigError(
            f"{path}.world: {world!r} is not allowed; choose one of {', '.join(synthetic.PRESETS)}", located=True
        )
    for key, value in options.items():
        if key in ("world", "name"):
            if not isinstance(value, str):
                raise ConfigError(f"{path}.{key}: expected str, got {type(value).__name__} {value!r}", located=True)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}.{key}: expected a number, got {type(value).__name__} {value!r}", located=True)
    if options.get("seed", 0) < 0 or not float(options.get("seed", 0)).is_integer():
        raise ConfigError(f"{path}.seed: {options['seed']!r} is not allowed; the seed is an integer >= 0", located=True)
    if options.get("chunk_rows", 1) < 1:
        raise ConfigError(
            f"{path}.chunk_rows: {options['chunk_rows']!r} is not allowed; chunk_rows must be >= 1", located=True
        )
    params = {k: v for k, v in options.items() if k not in ("world", "seed", "scale", "chunk_rows")}
    try:
        dataclasses.replace(synthetic.PRESETS[world], **params).scaled(options.get("scale", 1.0))
    except ValueError as err:
        raise ConfigError(f"{path}: {err}", located=True) from None


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in PRESET_FILES.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict:
    path = PRESET_FILES / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    return load_yaml(path)


def load_yaml(path: str | Path | Traversable) -> dict:
    try:
        text = Path(path).read_text() if isinstance(path, (str, os.PathLike)) else path.read_text()
    except (OSError, UnicodeDecodeError) as err:  # a folder, unreadable, binary
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"cannot read the config file {path}: {reason}; give a YAML file") from None
    try:
        data = load_yaml_text(text)
    except yaml.YAMLError as err:  # one line: the problem and where
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).replace("\n", " ")
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data
