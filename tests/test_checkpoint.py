"""Checkpoints: atomic and checksummed, with a fallback; the engine resumes exactly."""

from __future__ import annotations

import errno
import gc
import io
import math
import weakref

import pytest
import torch

from learner.checkpoint import CheckpointError, CheckpointStore
from learner.engine import Engine
from learner.results import as_row


def test_save_keeps_the_newest_and_loads_the_pointer(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for period in range(4):
        store.save(period, {"period": period, "weights": torch.full((3,), float(period))})
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.pt")) == ["ckpt-000002.pt", "ckpt-000003.pt"]
    state, path = store.load_latest()
    assert state["period"] == 3 and path.name == "ckpt-000003.pt"


def test_a_saved_table_is_freed_as_soon_as_the_learner_drops_it(tmp_path):
    # torch.save leaves a reference cycle holding what it wrote; a table grown after a
    # checkpoint must not stay resident twice until Python gets round to a full collection
    table = torch.ones(1000)
    storage = weakref.ref(table.untyped_storage())
    gc.disable()
    try:
        CheckpointStore(tmp_path, keep=1).save(0, {"table": table})
        del table
        assert storage() is None, "the checkpoint kept the saved table alive"
    finally:
        gc.enable()


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one_with_a_message(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(1, {"period": 1})
    store.save(2, {"period": 2})
    newest = tmp_path / "ckpt-000002.pt"
    newest.write_bytes(newest.read_bytes()[:-5])  # partial write
    messages = []
    state, path = store.load_latest(messages.append)
    assert state["period"] == 1 and path.name == "ckpt-000001.pt"
    assert "ckpt-000002.pt" in messages[0] and "checksum" in messages[0]


def test_no_valid_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        CheckpointStore(tmp_path).load_latest()


def test_a_full_disk_keeps_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    store.save(1, {"period": 1})
    real_open = open

    def disk_full(path, mode="r", *args, **kwargs):  # simulated: writing a temp file fails
        if str(path).endswith(".tmp") and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*ckpt-000001.pt is intact"):
        store.save(2, {"period": 2})
    monkeypatch.undo()
    state, path = store.load_latest()
    assert state["period"] == 1 and path.name == "ckpt-000001.pt"
    assert (tmp_path / "latest").read_text() == "ckpt-000001.pt"


def test_a_write_the_device_refuses_leaves_no_temp_file_and_the_previous_checkpoint(tmp_path):
    """A real ENOSPC from the kernel (the temp file is a link to /dev/full) under torch.save,
    which wraps it in a RuntimeError: one clear error, no *.tmp, the previous one intact."""
    store = CheckpointStore(tmp_path)
    store.save(1, {"period": 1})
    (tmp_path / "ckpt-000002.pt.tmp").symlink_to("/dev/full")
    with pytest.raises(CheckpointError, match="No space left on device.*ckpt-000001.pt is intact"):
        store.save(2, {"period": 2, "weights": torch.zeros(100_000)})
    assert not list(tmp_path.glob("*.tmp"))
    state, path = store.load_latest()
    assert state["period"] == 1 and path.name == "ckpt-000001.pt"


def _run(engine, periods):
    return [as_row(r) for t, events in periods for r in engine.close_period(t, events)]


def test_engine_state_round_trip_resumes_identically(tiny):
    cfg, phases, periods = tiny
    uninterrupted = Engine(cfg.learner, phases)
    expected = _run(uninterrupted, periods[:4])
    uninterrupted.request_enable("frozen")  # control state is part of the checkpoint too
    expected += _run(uninterrupted, periods[4:])

    first = Engine(cfg.learner, phases)
    rows = _run(first, periods[:4])
    first.request_enable("frozen")
    resumed = Engine(cfg.learner, phases)
    resumed.load_state_dict(torch.load(_roundtrip(first.state_dict()), weights_only=False))
    assert resumed.control_state() == first.control_state()
    rows += _run(resumed, periods[4:])
    assert any(r["strategy"] == "frozen" for r in rows)
    for a, b in zip(rows, expected, strict=True):
        for key in a:
            if key.endswith("_seconds"):
                continue
            assert a[key] == b[key] or (isinstance(a[key], float) and math.isnan(a[key]) and math.isnan(b[key])), key


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_a_checkpoint_without_record_digests_is_refused_with_what_to_do(tiny):
    from simulator.bus.memory import MemoryBus
    from simulator.stream import StreamLearner

    cfg, phases, _ = tiny
    bus = MemoryBus()
    bus.create_topic("rtsim.events.old", 3)
    manifest = {"run_id": "old", "schedule": [0, 1], "n_events": 1}
    manifest |= {"producer": "p", "partition_rows": [[0, 1]] * 3, "end_watermark": 1}
    learner = StreamLearner(bus, Engine(cfg.learner, phases), manifest)
    with pytest.raises(CheckpointError, match="older rtsim.*without --resume"):
        learner.restore({"rows_seen": {0: 5}})
