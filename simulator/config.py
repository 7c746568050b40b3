"""A run's resolved configuration: preset, then --config file, then --set overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from learner.config import LearnerConfig
from replay_data.presets import DataConfig, load_preset, load_yaml
from replay_data.typed_config import ConfigError, build, load_yaml_text, merge, not_allowed, set_path, to_dict


@dataclass(frozen=True)
class ReplayConfig:
    """How the producer paces the log onto the bus."""

    speed: float | Literal["max"] = "max"  # event-time seconds per wall second
    max_events_per_second: float | None = None
    partitions: int = 3
    block_events: int = 5000  # at most this many events between watermarks
    block_seconds: int = 3600  # and at most this much log time (pacing granularity)

    def validate(self) -> None:
        if self.speed != "max" and not self.speed > 0:
            raise not_allowed("speed", self.speed, "speed must be > 0 or 'max'")
        if self.max_events_per_second is not None and not self.max_events_per_second > 0:
            raise not_allowed(
                "max_events_per_second",
                self.max_events_per_second,
                "max_events_per_second must be > 0 (or null for no limit)",
            )
        for key in ("partitions", "block_events", "block_seconds"):
            if getattr(self, key) < 1:
                raise not_allowed(key, getattr(self, key), f"{key} must be >= 1")


@dataclass(frozen=True)
class BusConfig:
    url: str = "memory"  # or kafka://HOST:PORT
    prefix: str = "rtsim"  # topic prefix
    connect_timeout_s: float = 30.0

    def validate(self) -> None:
        if self.url != "memory" and not _KAFKA_URL.fullmatch(self.url):
            raise not_allowed("url", self.url, "use memory or kafka://HOST:PORT[,HOST:PORT...]")
        if not self.prefix:
            raise not_allowed("prefix", self.prefix, "the topic prefix must not be empty")
        if not self.connect_timeout_s > 0:
            raise not_allowed("connect_timeout_s", self.connect_timeout_s, "connect_timeout_s must be > 0")


_KAFKA_URL = re.compile(r"kafka://[^\s,:/]+:\d{1,5}(,[^\s,:/]+:\d{1,5})*")


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

    def validate(self) -> None:
        if not self.host:
            raise not_allowed("host", self.host, "give an address to listen on, e.g. 127.0.0.1")
        for key in ("metrics_port", "producer_metrics_port", "control_port", "producer_control_port"):
            port = getattr(self, key)
            if port is not None and not 0 <= port <= 65535:  # None: the default, or a free one if taken
                raise not_allowed(key, port, "a port is 0 (a free one) to 65535, or null for the default")


@dataclass(frozen=True)
class RunConfig:
    preset: str = "demo"
    description: str = ""
    data: DataConfig = DataConfig()
    learner: LearnerConfig = LearnerConfig()
    replay: ReplayConfig = ReplayConfig()
    bus: BusConfig = BusConfig()
    serve: ServeConfig = ServeConfig()


def resolve(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    input_path: str | None = None,
) -> RunConfig:
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
            value = load_yaml_text(raw)
        except yaml.YAMLError as err:
            reason = getattr(err, "problem", None) or err
            raise ConfigError(f"--set {item}: the value is not valid YAML ({reason})") from None
        set_path(data, key.strip(), value)
    if input_path is not None:
        set_path(data, "data.input", str(input_path))
    return build(RunConfig, data)


def dump(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
