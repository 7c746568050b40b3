"""Fuzz targets for the boundaries issue #18 hardened (bounded by the hypothesis profile and
the max_examples below): bus records and their headers as the learner ingests them, config
files, and damaged compressed inputs. The wire decoder and the control API are fuzzed in
test_fuzz.py, reader lines in test_readers.py, config values in test_config.py."""

from __future__ import annotations

import gzip
import json
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay_data import readers
from replay_data.rejects import MalformedInputError, Rejects
from replay_data.typed_config import ConfigError
from simulator.bus import Message, wire
from simulator.bus.memory import MemoryBus
from simulator.config import resolve
from simulator.stream import StreamLearner

# --- bus records: nothing a forger sends makes the learner drop a genuine event -------------

EDGES = [0, 100, 200, 300]
N_EVENTS = 60
TOPIC = wire.events_topic("fuzz", "run")
PRODUCER = "genuine"
END_WATERMARK = 5 * (N_EVENTS - 1) + 1
MANIFEST = {
    "run_id": "run",
    "schedule": EDGES,
    "n_events": N_EVENTS,
    "producer": PRODUCER,
    "partition_rows": [[0, N_EVENTS - 3], [3, N_EVENTS]],  # records of 3 rows, alternating
    "end_watermark": END_WATERMARK,
}


def _genuine() -> list[tuple[int, bytes, dict[str, str]]]:
    """(partition, value, headers) as the producer sends them: rows 0..59 in records of 3."""
    records = []
    for row in range(0, N_EVENTS, 3):
        events = [{"ts": 5 * r, "user": f"u{r % 7}", "item": f"i{r}"} for r in range(row, row + 3)]
        headers = wire.headers(wire.EVENTS, row=row, producer=PRODUCER)
        records.append((row // 3 % 2, json.dumps(events).encode(), headers))
    return records


_row_header = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, N_EVENTS).map(str),
    st.text(max_size=8),
    st.sampled_from(["0", "3", "57", "+3", " 3", "3\n", "٣", "1e3"]),
)
_event = st.fixed_dictionaries(
    {"ts": st.one_of(st.integers(-10, 400), st.integers()), "user": st.text(max_size=3), "item": st.text(max_size=3)}
)
_forged_value = st.one_of(
    st.binary(max_size=30),
    _event.map(lambda e: json.dumps(e).encode()),
    st.lists(_event, max_size=4).map(lambda e: json.dumps(e).encode()),
    st.sampled_from([value for _, value, _ in _genuine()]),
)
_optional = {wire.FORMAT_HEADER: st.sampled_from([wire.FORMAT, "2", ""]), wire.ROW_HEADER: _row_header}
# Records of another producer, or none, of every kind; and records carrying the run's own
# identity, which is trusted within the manifest's bounds: its events and watermarks, but
# not an end marker that follows a forged last watermark (admission.py: strays, not adversaries).
_forged_headers = st.one_of(
    st.fixed_dictionaries(
        {wire.TYPE_HEADER: st.sampled_from([wire.EVENTS, wire.WATERMARK, wire.END, "x"])},
        optional=_optional | {wire.PRODUCER_HEADER: st.sampled_from(["other", "", PRODUCER + " "])},
    ),
    st.fixed_dictionaries(
        {wire.TYPE_HEADER: st.sampled_from([wire.EVENTS, wire.WATERMARK]), wire.PRODUCER_HEADER: st.just(PRODUCER)},
        optional=_optional,
    ),
)
_forged = st.tuples(st.integers(0, 1), _forged_value, _forged_headers)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forged=st.lists(st.tuples(st.integers(0, 25), _forged), max_size=12))
def test_no_forged_record_makes_the_learner_drop_a_genuine_event(forged):
    bus = MemoryBus()
    bus.create_topic(TOPIC, 2)
    letters: list[dict] = []
    learner = StreamLearner(bus, None, MANIFEST, prefix="fuzz", deadletter=letters.append)
    stream = _genuine()
    for position, record in sorted(forged, key=lambda f: f[0], reverse=True):
        stream.insert(position, record)
    for p in (0, 1):
        stream.append((p, wire.encode_watermark(END_WATERMARK), wire.headers(wire.WATERMARK, producer=PRODUCER)))
        stream.append((p, b"", wire.headers(wire.END, producer=PRODUCER)))
    offsets = Counter()
    for partition, value, headers in stream:
        learner._ingest(Message(TOPIC, partition, offsets[partition], None, value, headers))
        offsets[partition] += 1
    ingested = Counter()
    while (closed := learner.windows.pop_closed()) is not None:
        ingested.update(map(tuple, closed[1][["ts", "user", "item"]].itertuples(index=False)))
    genuine = Counter((e["ts"], e["user"], e["item"]) for _, value, _ in _genuine() for e in json.loads(value))
    assert not genuine - ingested, "a genuine event was dropped"
    assert sum(learner.stats.rejected.values()) - learner.stats.rejected["duplicate"] == len(letters)


def test_events_read_after_the_last_period_closed_are_counted_and_dead_lettered():
    """A watermark may close the last period before the end markers arrive; events read
    after that (the learner drains the topic) would be counted but reach no period."""
    bus = MemoryBus()
    bus.create_topic(TOPIC, 2)
    letters: list[dict] = []
    manifest = MANIFEST | {"end_watermark": EDGES[-1]}  # the last event one second before the edge
    learner = StreamLearner(bus, None, manifest, prefix="fuzz", deadletter=letters.append)
    for p in (0, 1):
        watermark = wire.encode_watermark(EDGES[-1])
        learner._ingest(Message(TOPIC, p, 0, None, watermark, wire.headers(wire.WATERMARK, producer=PRODUCER)))
    while learner.windows.pop_closed() is not None:
        pass
    assert learner.windows.finished
    value, headers = _genuine()[0][1:]
    learner._ingest(Message(TOPIC, 0, 1, None, value, headers))
    assert dict(learner.stats.rejected) == {"after_end": 1} and learner.windows.stats.consumed == 0
    assert [letter["reason"] for letter in letters] == ["after_end"]


# --- config files ---------------------------------------------------------------------------

_yaml_text = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=80).map(str.encode),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(
                st.sampled_from(["data", "learner", "replay", "serve", "bus", "periods", "x"]), inner, max_size=3
            ),
        ),
        max_leaves=8,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_yaml_text)
def test_any_config_file_resolves_or_is_a_config_error(tmp_path, content):
    path = tmp_path / "fuzzed.yaml"
    path.write_bytes(content)
    try:
        resolve("tiny", str(path))
    except ConfigError as err:
        assert str(err)


# --- damaged compressed inputs --------------------------------------------------------------

_REVIEWS = b"".join(
    b'{"review_id": "r%d", "user_id": "u%d", "business_id": "b%d", "stars": 5, '
    b'"date": "2015-01-0%d 10:00:00"}\n' % (i, i % 13, i % 17, 1 + i % 9)
    for i in range(300)
)
_GZ = gzip.compress(_REVIEWS)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.integers(0, len(_GZ)),
    flips=st.lists(st.tuples(st.integers(0, len(_GZ) - 1), st.integers(1, 255)), max_size=3),
)
def test_a_damaged_gzip_input_is_read_or_a_one_line_error(tmp_path, cut, flips):
    data = bytearray(_GZ[:cut])
    for at, mask in flips:
        if at < len(data):
            data[at] ^= mask
    path = tmp_path / "reviews.json.gz"
    path.write_bytes(bytes(data))
    try:
        rows = sum(len(chunk) for chunk in readers.read("yelp", path, Rejects(), progress=False))
    except MalformedInputError as err:
        assert "\n" not in str(err) and str(path) in str(err)
    else:
        assert rows <= 300
