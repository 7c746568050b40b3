"""The world around the learner: buses, the paced replay producer, runs, the CLI."""

from __future__ import annotations

from replay_data.lazy import lazy_surface

# The public surface: each name and the module that defines it, imported on first use
_PUBLIC = {
    "RunConfig": "simulator.config",
    "resolve": "simulator.config",
    "RunDir": "simulator.rundir",
    "run_embedded": "simulator.run",
    "open_bus": "simulator.bus",
    "main": "simulator.cli",
    "StreamLearner": "simulator.stream",
}

__all__, __getattr__, __dir__ = lazy_surface(__name__, _PUBLIC)
