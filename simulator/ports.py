"""Which port each server of a run binds (ServeConfig's rules, in one place)."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.config import ServeConfig

DEFAULT_PORTS = {
    "metrics_port": 9108,
    "producer_metrics_port": 9109,
    "control_port": 8765,
    "producer_control_port": 8766,
}
# an unset producer port follows the learner's when that asks for a free port
FOLLOWS = {"producer_metrics_port": "metrics_port", "producer_control_port": "control_port"}


@dataclass(frozen=True)
class PortPlan:
    port: int
    fallback: bool  # the default port: when taken, a free one serves instead


def plan_port(serve: ServeConfig, key: str) -> PortPlan:
    value = getattr(serve, key)
    if value is not None:
        return PortPlan(value, fallback=False)
    leader = FOLLOWS.get(key)
    if leader is not None and getattr(serve, leader) == 0:
        return PortPlan(0, fallback=False)
    return PortPlan(DEFAULT_PORTS[key], fallback=True)
