"""Transports: `memory` (in-process) and `kafka://HOST:PORT`, behind one interface."""

from __future__ import annotations

from simulator.bus.base import Bus, BusError, Consumer, Message, Producer


def open_bus(url: str) -> Bus:
    """`memory` (the default) or `kafka://HOST:PORT[,HOST:PORT...]`."""
    if url == "memory":
        from simulator.bus.memory import MemoryBus

        return MemoryBus()
    if url.startswith("kafka://"):
        from simulator.bus.kafka import KafkaBus

        return KafkaBus(url[len("kafka://") :])
    raise BusError(f"unknown bus {url!r}: use `memory` or `kafka://HOST:PORT`")


__all__ = ["Bus", "BusError", "Consumer", "Message", "Producer", "open_bus"]
