"""A learner crashed mid-run, for the resume tests: its checkpoint is what a restart loads."""

from __future__ import annotations

from learner.checkpoint import CheckpointStore
from learner.engine import Engine
from simulator.stream import StreamLearner


class Crash(Exception):
    """Raised from the learner's period hook: a kill -9 stand-in that leaves the checkpoints."""


def checkpoint_after_first_online_period(bus, learner_cfg, manifest: dict, prefix: str, store: CheckpointStore) -> dict:
    """Run a learner on `bus` until the period after the first online one closes, crash it
    there, and return the newest checkpoint's state."""
    crash_at = manifest["phases"].index("online") + 1

    def crash(t, *rest):
        if t == crash_at:
            raise Crash

    learner = StreamLearner(
        bus, Engine(learner_cfg, manifest["phases"]), manifest, prefix=prefix, checkpoints=store, on_period=crash
    )
    try:
        learner.run()
    except Crash:
        return store.load_latest()[0]
    raise AssertionError(f"the learner never reached period {crash_at}")
