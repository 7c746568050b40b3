"""The system under test: period windows, models, strategies, evaluation, metrics."""

from __future__ import annotations

from replay_data.lazy import lazy_surface

# The public surface: each name and the module that defines it, imported on first use
_PUBLIC = {
    "LearnerConfig": "learner.config",
    "TrainSpec": "learner.train_spec",
    "Engine": "learner.engine",
    "StrategyResult": "learner.engine",
    "Strategy": "learner.strategies",
    "MFStrategy": "learner.strategies",
    "register": "learner.strategies",
    "REGISTRY": "learner.strategies",
}

__all__, __getattr__, __dir__ = lazy_surface(__name__, _PUBLIC)
