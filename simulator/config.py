"""A run's resolved configuration: preset, then --config file, then --set overrides."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from learner.config import LearnerConfig
from replay_data.presets import DataConfig, load_preset, load_yaml
from replay_data.typed_config import ConfigError, build, merge, set_path, to_dict


@dataclass(frozen=True)
class ReplayConfig:
    """How the producer paces the log onto the bus."""

    speed: float | Literal["max"] = "max"  # event-time seconds per wall second
    max_events_per_second: float | None = None
    partitions: int = 3
    block_events: int = 5000  # at most this many events between watermarks
    block_seconds: int = 3600  # and at most this much log time (pacing granularity)

    def validate(self) -> None:
        if self.speed != "max" and self.speed <= 0:
            raise ConfigError(f"speed must be > 0 or 'max', got {self.speed}")
        if self.partitions < 1 or self.block_events < 1 or self.block_seconds < 1:
            raise ConfigError("partitions, block_events and block_seconds must be >= 1")


@dataclass(frozen=True)
class BusConfig:
    url: str = "memory"  # or kafka://HOST:PORT
    prefix: str = "rtsim"  # topic prefix
    connect_timeout_s: float = 30.0


@dataclass(frozen=True)
class ServeConfig:
    """Where the learner and the producer serve metrics and their control APIs.

    A port left unset (None) is the default of simulator/ports.py, or a free port when
    another process holds it (two runs on one machine); a port given is used as given, and
    taken it fails (0 = a free port). An unset producer port follows its learner port when
    that is 0, so `--metrics-port 0 --control-port 0` frees every server of a run."""

    host: str = "127.0.0.1"  # another address needs a control token (RTSIM_CONTROL_TOKEN or token_file)
    metrics_port: int | None = None
    producer_metrics_port: int | None = None
    control_port: int | None = None
    producer_control_port: int | None = None
    token_file: str | None = None


@dataclass(frozen=True)
class RunConfig:
    preset: str = "demo"
    description: str = ""
    data: DataConfig = DataConfig()
    learner: LearnerConfig = LearnerConfig()
    replay: ReplayConfig = ReplayConfig()
    bus: BusConfig = BusConfig()
    serve: ServeConfig = ServeConfig()


def resolve(preset: str | None = None, config_file: str | Path | None = None,
            overrides: list[str] | None = None, input_path: str | None = None) -> RunConfig:
    """Layer the sources in a fixed order, then validate the whole result once."""
    data: dict = {}
    if config_file is not None:
        data = load_yaml(config_file)
    name = preset or data.get("preset") or "demo"
    data = merge(load_preset(name), data)
    data["preset"] = name
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            reason = getattr(err, "problem", None) or err
            raise ConfigError(f"--set {item}: the value is not valid YAML ({reason})") from None
        set_path(data, key.strip(), value)
    if input_path is not None:
        set_path(data, "data.input", str(input_path))
    return build(RunConfig, data)


def dump(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
