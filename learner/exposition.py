"""Exposition helpers shared by the learner's and the producer's metrics.

- `RunRegistry` stamps every sample with the run's id, so one Prometheus scraping several
  runs (or a run before and after a resume) tells their series apart, and series of the
  learner and the producer of one run join on `run_id` even in separate processes.
- `OptionalGauge` is a label-less gauge that is absent until set: a value nobody has
  measured yet (before the first online period, at speed max) stays missing instead of
  reading 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, Info
from prometheus_client.metrics_core import Metric


@dataclass(frozen=True)
class RunLabels:
    run_id: str
    preset: str = ""
    bus: str = ""  # "memory" or "kafka"


class RunRegistry(CollectorRegistry):
    """A registry adding `run_id` to every sample and exporting rtsim_run_info{run_id,preset,bus} 1."""

    def __init__(self, run: RunLabels | None) -> None:
        super().__init__()
        self.run = run
        if run is not None:
            Info("rtsim_run", "The run this process belongs to", registry=self).info(
                {"preset": run.preset, "bus": run.bus}
            )

    def collect(self) -> Iterable[Metric]:
        for family in super().collect():
            if self.run is not None:
                family.samples = [s._replace(labels={**s.labels, "run_id": self.run.run_id}) for s in family.samples]
            yield family


def bus_kind(url: str) -> str:
    return "kafka" if url.startswith("kafka://") else url


class OptionalGauge(Gauge):
    """A label-less gauge exported only once set; `clear()` hides it again."""

    def __init__(self, *args, **kwargs) -> None:
        self._is_set = False
        super().__init__(*args, **kwargs)

    def set(self, value: float) -> None:
        super().set(value)
        self._is_set = True

    def clear(self) -> None:
        self._is_set = False

    def collect(self) -> Iterable[Metric]:
        return super().collect() if self._is_set else []
