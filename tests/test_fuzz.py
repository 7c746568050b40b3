"""Property tests on the learner's inputs: the wire decoder, the period windows, the
control API, and an oversize record on Kafka."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learner.windows import PeriodWindows
from simulator.bus import wire
from simulator.bus.base import BusError

# --- (a) the wire decoder ------------------------------------------------------------------

REASONS = {"bad_format", "bad_type", "not_utf8", "bad_json", "bad_shape", "missing_field", "bad_timestamp"}

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12,
)
_event_like = st.fixed_dictionaries(
    {
        "ts": st.one_of(st.integers(min_value=-(2**64), max_value=2**64), _scalars),
        "user": st.one_of(st.text(max_size=4), _scalars),
        "item": st.one_of(st.text(max_size=4), _scalars),
    },
    optional={"extra": _scalars},
)
_payload = st.one_of(
    st.binary(max_size=64),
    _json.map(lambda v: json.dumps(v).encode()),
    _event_like.map(lambda v: json.dumps(v).encode()),
    st.lists(st.one_of(_event_like, _json), min_size=0, max_size=6).map(lambda v: json.dumps(v).encode()),
    st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
_header_value = st.one_of(
    st.sampled_from([wire.FORMAT, wire.EVENTS, wire.WATERMARK, wire.END, "", "2"]), st.text(max_size=6)
)
_headers = st.one_of(
    st.dictionaries(
        st.sampled_from([wire.TYPE_HEADER, wire.FORMAT_HEADER, wire.ROW_HEADER, "x"]), _header_value, max_size=4
    ),
    st.sampled_from([wire.EVENTS, wire.WATERMARK, wire.END]).map(lambda kind: wire.headers(kind)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=_headers, value=_payload)
def test_decode_returns_consistent_columns_or_a_known_reason(headers, value):
    try:
        decoded = wire.decode(headers, value)
    except wire.DecodeError as err:
        assert err.reason in REASONS, err
        return
    assert decoded.kind in (wire.EVENTS, wire.WATERMARK, wire.END)
    assert isinstance(decoded.ts, np.ndarray) and decoded.ts.dtype == np.int64
    if decoded.kind == wire.EVENTS:
        assert 1 <= len(decoded.ts) == len(decoded.users) == len(decoded.items) <= wire.MAX_EVENTS_PER_RECORD
        assert all(isinstance(u, str) and u for u in decoded.users)
        assert all(isinstance(i, str) and i for i in decoded.items)
    elif decoded.kind == wire.WATERMARK:
        assert len(decoded.ts) == 1 and decoded.users == decoded.items == []
    else:
        assert len(decoded.ts) == 0 and decoded.users == decoded.items == []


def test_decode_has_no_byte_limit_of_its_own():
    """The decoder bounds events per record, not bytes: a record of long ids over 1 MiB
    decodes; the byte limit is the broker's (see the Kafka test below)."""
    events = [{"ts": i, "user": "u" * 2000, "item": "i"} for i in range(600)]
    value = json.dumps(events).encode()
    assert len(value) > 2**20
    assert len(wire.decode(wire.headers(wire.EVENTS), value).ts) == 600
    too_many = json.dumps([{"ts": 1, "user": "u", "item": "i"}] * (wire.MAX_EVENTS_PER_RECORD + 1)).encode()
    with pytest.raises(wire.DecodeError) as err:
        wire.decode(wire.headers(wire.EVENTS), too_many)
    assert err.value.reason == "bad_shape"


# --- (b) period windows under arbitrary interleavings ---------------------------------------


@st.composite
def _streams(draw):
    n_periods = draw(st.integers(1, 5))
    edges = np.cumsum([0] + draw(st.lists(st.integers(1, 20), min_size=n_periods, max_size=n_periods))) + 100
    partitions = draw(st.integers(1, 3))
    lo, hi = int(edges[0]) - 15, int(edges[-1]) + 15
    ops = []  # ("events", partition, ts list) | ("watermark", partition, ts) | ("end", partition)
    for _ in range(draw(st.integers(0, 30))):
        p = draw(st.integers(0, partitions - 1))
        kind = draw(st.sampled_from(["events", "events", "events", "watermark", "dup"]))
        if kind == "events":
            ops.append(("events", p, draw(st.lists(st.integers(lo, hi), min_size=1, max_size=6))))
        elif kind == "watermark":
            ops.append(("watermark", p, draw(st.integers(lo, hi))))
        elif ops:  # a duplicate delivery of an earlier record, to any partition
            op = ops[draw(st.integers(0, len(ops) - 1))]
            ops.append((op[0], p, *op[2:]))
    # every partition ends, at an arbitrary place after its own last record or anywhere
    for p in range(partitions):
        ops.insert(draw(st.integers(0, len(ops))), ("end", p))
    return edges, partitions, ops


@settings(max_examples=200, deadline=None)
@given(_streams())
def test_windows_never_lose_or_double_count_an_event(stream):
    edges, partitions, ops = stream
    windows = PeriodWindows(edges, partitions)
    closed: list[int] = []
    closed_events = 0
    total = 0
    offsets = [0] * partitions
    for op in ops:
        if windows.finished:
            # the learner stops reading here (StreamLearner.run); a record added after the
            # last period closed would be counted late but buffered in no period
            break
        kind, p = op[0], op[1]
        if kind == "events":
            ts = np.array(op[2], np.int64)
            total += len(ts)
            windows.add(p, offsets[p], ts, [f"u{t}" for t in ts], [f"i{t}" for t in ts])
        elif kind == "watermark":
            windows.watermark(p, op[2])
        else:
            windows.end(p)
        offsets[p] += 1
        while (popped := windows.pop_closed()) is not None:
            t, frame = popped
            closed.append(t)
            closed_events += len(frame)
            assert len(frame["ts"]) == len(frame["user"]) == len(frame["item"])
            # a closed period holds only its own events, or late ones folded into it
            assert (frame["ts"].to_numpy() < edges[t + 1]).all()
        assert windows.stats.consumed + sum(windows.stats.outside.values()) == total
        assert closed_events <= windows.stats.consumed
    # every partition ended: every period closed, in order, each once
    assert windows.finished and closed == list(range(len(edges) - 1))
    assert closed_events == windows.stats.consumed
    assert windows.stats.consumed + sum(windows.stats.outside.values()) == total
    assert 0 <= windows.stats.late <= windows.stats.consumed


# --- (c) the learner's control API ----------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_api(engine):
    from simulator.control import LearnerCommands
    from simulator.http_api import learner_routes, start_api

    with start_api(learner_routes(LearnerCommands(engine))) as api:
        yield engine, api


_segment = st.one_of(
    st.sampled_from(
        ["status", "serving", "strategies", "recommend", "fine_tune", "spmf", "sml", "full_retrain", "nope", "", ".."]
    ),
    st.text(max_size=6),
)
_query = st.dictionaries(
    st.sampled_from(["user", "k", "verbose", "strategy", "x"]),
    st.one_of(st.text(max_size=6), st.integers(-5, 10**6).map(str)),
    max_size=3,
)
_body = st.one_of(
    st.none(),
    _json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "strategy": st.one_of(st.sampled_from(["spmf", "fine_tune", "sml"]), _scalars),
            "from_serving": _scalars,
            "x": _scalars,
        },
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    segments=st.lists(_segment, min_size=0, max_size=3),
    query=_query,
    body=_body,
)
def test_any_request_gets_json_with_a_2xx_or_4xx_and_a_4xx_changes_nothing(fuzz_api, method, segments, query, body):
    engine, api = fuzz_api
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    if query:
        path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
    before = engine.control_state()
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        status, raw = answer.status, answer.read()
    finally:
        connection.close()
    assert 200 <= status < 300 or 400 <= status < 500, (status, raw[:300])
    parsed = json.loads(raw)
    assert isinstance(parsed, dict)
    if status >= 400:
        assert isinstance(parsed.get("error"), str) and parsed["error"]
        assert engine.control_state() == before


# --- (d) an oversize record on Kafka --------------------------------------------------------


@pytest.mark.kafka
def test_a_record_over_the_brokers_limit_is_a_clear_bus_error(kafka_bootstrap):
    from simulator.bus.kafka import KafkaBus

    bus = KafkaBus(kafka_bootstrap)
    topic = f"fuzz-oversize-{uuid.uuid4().hex[:8]}"
    bus.create_topic(topic, 1)
    producer = bus.producer()
    try:
        started = time.monotonic()
        with pytest.raises(BusError, match="(?i)too large|size"):
            producer.send(topic, b"x" * (2**20 + 1), partition=0, headers=wire.headers(wire.EVENTS))
            producer.flush()
        assert time.monotonic() - started < 30
        # the producer still works afterwards
        producer.send(topic, b"ok", partition=0)
        producer.flush()
        consumer = bus.consumer(topic, f"g-{uuid.uuid4().hex[:8]}")
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                got = [m.value for m in consumer.poll(0.5)]
            assert got == [b"ok"]
        finally:
            consumer.close()
    finally:
        producer.close()
        bus.close()
