import numpy as np
import pytest

from learner.windows import PeriodWindows
from simulator.bus import wire


def _drain(w):
    """Every period that can close now, oldest first."""
    out = []
    while (closed := w.pop_closed()) is not None:
        out.append(closed)
    return out


def _add(w, partition, offset, ts):
    ts = np.asarray(ts, dtype=np.int64)
    w.add(partition, offset, ts, [f"u{t}" for t in ts], [f"i{t}" for t in ts])


def test_a_period_closes_only_when_every_partition_has_passed_its_end():
    w = PeriodWindows([0, 10, 20, 30], partitions=2)
    _add(w, 0, 0, [1, 2, 12])
    w.watermark(0, 15)
    assert _drain(w) == []  # partition 1 has said nothing yet
    w.watermark(1, 10)
    closed = _drain(w)
    assert [t for t, _ in closed] == [0]
    assert closed[0][1]["ts"].tolist() == [1, 2] and closed[0][1]["user"].tolist() == ["u1", "u2"]
    w.end(1)
    w.watermark(0, 30)
    assert [(t, f["ts"].tolist()) for t, f in _drain(w)] == [(1, [12]), (2, [])]
    assert w.finished


def test_late_and_out_of_schedule_events_are_counted_not_lost():
    w = PeriodWindows([100, 110, 120], partitions=1)
    _add(w, 0, 0, [99, 105, 130])
    w.watermark(0, 110)
    assert [len(f) for _, f in _drain(w)] == [1]
    _add(w, 0, 1, [101, 115])  # 101 arrives after period 0 closed: late, folded into period 1
    w.end(0)
    ((t, frame),) = _drain(w)
    assert t == 1 and sorted(frame["ts"].tolist()) == [101, 115]
    assert w.stats.late == 1 and w.stats.consumed == 3
    assert dict(w.stats.outside) == {"before_schedule": 1, "after_schedule": 1}


def test_safe_positions_never_skip_a_record_of_an_open_period():
    w = PeriodWindows([0, 10, 20], partitions=2)
    _add(w, 0, 5, [1])
    _add(w, 0, 6, [11])
    _add(w, 1, 3, [12])
    assert w.safe_positions({0: 7, 1: 4}) == {0: 5, 1: 3}
    w.watermark(0, 10)
    w.watermark(1, 10)
    _drain(w)
    assert w.safe_positions({0: 7, 1: 4}) == {0: 6, 1: 3}


def test_wire_round_trip_and_rejections():
    value = wire.encode_events(np.array([5, 6]), ["a", "b"], ["x", "y"])
    decoded = wire.decode(wire.headers(wire.EVENTS), value)
    assert decoded.ts.tolist() == [5, 6] and decoded.users == ["a", "b"] and decoded.items == ["x", "y"]
    single = wire.decode(wire.headers(wire.EVENTS), wire.encode_events(np.array([7]), ["a"], ["x"]))
    assert single.ts.tolist() == [7]
    assert wire.decode(wire.headers(wire.WATERMARK), wire.encode_watermark(42)).ts.tolist() == [42]
    assert wire.decode(wire.headers(wire.END), b"").kind == wire.END
    bad = {
        b"{nope": "bad_json",
        b"\xff\xfe": "not_utf8",
        b'{"ts": 1, "user": "a"}': "missing_field",
        b'{"ts": "soon", "user": "a", "item": "b"}': "bad_timestamp",
        b'{"ts": 1.5, "user": "a", "item": "b"}': "bad_timestamp",
        b"[]": "bad_shape",
        b"[1, 2]": "bad_shape",
    }
    for raw, reason in bad.items():
        with pytest.raises(wire.DecodeError) as err:
            wire.decode(wire.headers(wire.EVENTS), raw)
        assert err.value.reason == reason, raw
    with pytest.raises(wire.DecodeError, match="bad_format"):
        wire.decode({wire.TYPE_HEADER: wire.EVENTS, wire.FORMAT_HEADER: "9"}, value)
    too_many = wire.encode_events(np.arange(1001), ["a"] * 1001, ["b"] * 1001)
    with pytest.raises(wire.DecodeError, match="bad_shape"):
        wire.decode(wire.headers(wire.EVENTS), too_many)


def test_partitioning_is_a_stable_hash_of_the_user():
    assert wire.partition_for("user-1", 3) == wire.partition_for("user-1", 3)
    spread = {wire.partition_for(f"u{i}", 3) for i in range(100)}
    assert spread == {0, 1, 2}
