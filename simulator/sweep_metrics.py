"""A sweep's progress as Prometheus metrics, served by the process that runs or follows the
sweep (`rtsim sweep FILE`, locally or over Kafka) and announced for `rtsim monitor`'s
discovery like a run's (simulator/targets.py, side `sweep`; run_id = the sweep's name).

`rtsim_sweep_jobs{worker, state}`: the sweep's jobs per worker and state (running, done,
failed; pending jobs have worker="none"). Labels stay few: one series per worker and state,
never one per job or setting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from prometheus_client import Gauge

from learner.exposition import RunLabels, RunRegistry, bus_kind

NO_WORKER = "none"


class SweepMetrics:
    def __init__(self, name: str = "", preset: str = "", bus: str = "memory") -> None:
        self.registry = RunRegistry(RunLabels(name, preset, bus_kind(bus)) if name else None)
        self.jobs = Gauge(
            "rtsim_sweep_jobs",
            "Jobs of the sweep per worker and state (pending, running, done, failed)",
            ["worker", "state"],
            registry=self.registry,
        )

    def observe(self, jobs: list[dict]) -> None:
        """Set the gauge from sweep.json's job entries. Every worker shows all three of its
        states (0 included), so a worker whose last job finished still reads running 0."""
        counts = Counter(
            (NO_WORKER, "pending") if job["state"] == "pending" else (job.get("worker") or NO_WORKER, job["state"])
            for job in jobs
        )
        self.jobs.clear()
        self.jobs.labels(worker=NO_WORKER, state="pending").set(counts[(NO_WORKER, "pending")])
        for worker in {worker for worker, state in counts if state != "pending"}:
            for state in ("running", "done", "failed"):
                self.jobs.labels(worker=worker, state=state).set(counts[(worker, state)])


def serve_sweep_metrics(
    metrics: SweepMetrics, name: str, port: int, report: Callable[[str], None]
) -> Callable[[], None]:
    """Serve on 127.0.0.1:port (0: a free one) and announce it; returns the function that
    stops both."""
    from learner.metrics import serve
    from simulator.targets import write_target

    server, bound = serve(metrics.registry, "127.0.0.1", port, option="--metrics-port")
    url = f"http://127.0.0.1:{bound}/metrics"
    report(f"sweep metrics: {url}")
    try:
        target = write_target(name, "sweep", url)
    except OSError as err:
        report(f"sweep metrics: not announced for Prometheus discovery ({err})")
        target = None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        if target is not None:
            target.unlink(missing_ok=True)

    return stop
