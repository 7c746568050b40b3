"""Health of a served model: rows that are not finite, the largest row norm, and a guard
that warns when that norm grows faster than training could explain.

A diverging strategy still scores (non-finite scores rank last, see evaluation.py), so a
run's numbers stay honest; these figures say *why* a strategy collapsed, in periods.csv,
the log and the metrics, before its quality shows it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

log = logging.getLogger("rtsim.learner")


@dataclass(frozen=True)
class TableHealth:
    nonfinite_rows: int  # user and item rows holding a NaN or an infinity
    max_row_norm: float  # the largest L2 norm among the finite rows (NaN if there is none)


def table_health(*tables: torch.Tensor) -> TableHealth:
    nonfinite, largest = 0, float("nan")
    with torch.no_grad():
        for table in tables:
            finite = torch.isfinite(table).all(1)
            nonfinite += int((~finite).sum())
            if bool(finite.any()):
                # float64: a row of large float32 values overflows its own squared norm
                norm = float(table[finite].double().norm(dim=1).max())
                largest = norm if math.isnan(largest) else max(largest, norm)
    return TableHealth(nonfinite, largest)


class NormGuard:
    """Warns when a strategy's tables hold non-finite rows, and when its largest served row
    norm, already above `floor`, grows more than `growth` times from one scored period to
    the next. Diverging tables grow geometrically (SML's grew ~3x a period on news before
    its fix); a first retrain may legitimately multiply small pretrained norms (250 epochs on
    `tiny` took 0.6 to 8.1), hence the floor."""

    def __init__(self, growth: float, floor: float) -> None:
        self.growth = growth
        self.floor = floor
        self.last: dict[str, float] = {}

    def check(self, t: int, strategy: str, health: TableHealth) -> bool:
        """Whether period t's tables of `strategy` warrant a warning (which is logged)."""
        before = self.last.get(strategy)
        now = health.max_row_norm
        self.last[strategy] = now
        if health.nonfinite_rows:
            log.warning(
                "period %d: %s serves %d rows that are not finite (NaN or inf); they rank "
                "last. The strategy has diverged: lower its learning rates",
                t,
                strategy,
                health.nonfinite_rows,
            )
            return True
        if before and math.isfinite(before) and now > max(self.growth * before, self.floor):
            log.warning(
                "period %d: the largest row norm of %s grew %.3g-fold in one period (%.3g -> %.3g),"
                " more than learner.guard.norm_growth=%g and above learner.guard.norm_floor=%g:"
                " it may be diverging",
                t,
                strategy,
                now / before,
                before,
                now,
                self.growth,
                self.floor,
            )
            return True
        return False

    def state_dict(self) -> dict:
        return dict(self.last)

    def load_state_dict(self, state: dict) -> None:
        self.last = dict(state)
