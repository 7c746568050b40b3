"""Drive the learner's engine period by period and write the run directory."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import pandas as pd

from learner.engine import Engine, StrategyResult
from learner.results import PeriodsCsv, summary_markdown
from replay_data.prepared import PreparedLog
from simulator.config import RunConfig
from simulator.rundir import RunDir


def prepared_periods(log: PreparedLog) -> Iterable[tuple[int, pd.DataFrame]]:
    """The log's periods as the bus would deliver them: raw ids, one closed period at a time."""
    bounds = log.period_bounds()
    for t in range(len(log.phases)):
        yield t, log.frame(bounds[t], bounds[t + 1])


def run_periods(cfg: RunConfig, phases: list[str], periods: Iterable[tuple[int, pd.DataFrame]],
                run_dir: RunDir, report: Callable[[str], None] = print) -> pd.DataFrame:
    """Close every period on the engine, appending to periods.csv; write summary.md."""
    engine = Engine(cfg.learner, phases)
    csv = PeriodsCsv(run_dir.periods_csv, cfg.learner.eval.ks)
    started = time.perf_counter()
    for t, events in periods:
        results = engine.close_period(t, events)
        csv.append(results)
        if engine.base_model is not None and not run_dir.base_model.exists():
            run_dir.save_base_model(engine)
        report(progress_line(t, phases[t], len(events), results, time.perf_counter() - started))
    frame = pd.read_csv(run_dir.periods_csv)
    run_dir.summary_md.write_text(summary_markdown(frame, f"rtsim run {run_dir.run_id} ({cfg.preset})"))
    return frame


def progress_line(t: int, phase: str, n_events: int, results: list[StrategyResult], elapsed: float) -> str:
    head = f"period {t:>3} {phase:<10} {n_events:>8} events"
    if not results:
        return f"{head} | buffered for pretraining  [{elapsed:6.1f}s]"
    top = max(results[0].metrics.ndcg)
    parts = [f"{r.strategy} {r.metrics.ndcg[top]:.4f} ({r.retrain_seconds:.1f}s)" for r in results]
    return f"{head} | NDCG@{top} (retrain s): " + "  ".join(parts) + f"  [{elapsed:6.1f}s]"
