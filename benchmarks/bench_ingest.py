"""Learner ingest throughput over the memory bus and Kafka, next to the raw consumers.

Ingest is what StreamLearner does between retrains: poll the bus, decode each record
(wire.decode), put its events into their period windows (PeriodWindows.add / watermark /
end) and cut each period as it closes (pop_closed). The learner path below runs the real
StreamLearner.run() loop with a stub engine that only counts the events of each closed
period (no retraining), so the code measured is the production code, not a copy.

The events are synthetic (22-character raw ids as in Yelp, timestamps spread over a
schedule of --periods periods) and are produced once per record size, before any timing,
the way the replay producer sends them: blocks of 5,000 events, each cut per partition
(wire.partition_for of the user) into records of up to --record-sizes events
(wire.encode_events, keyed by the first user, with the rtsim-row header of its first
event), a watermark on every partition after each block, and an end marker on every
partition at the end.

Paths, each repeated --repeats times (interleaved, so a burst of load hits all of them)
and reported as the median:
  learner   StreamLearner.run() over the bus (consumer creation, poll, decode, windows, cut)
  bus poll  memory only: the MemoryBus consumer's poll() alone, no decoding
  raw       Kafka only: kafka-python's KafkaConsumer polling every record of the topic, no
            decoding, with the consumer settings of simulator/bus/kafka.py ("raw") and with
            kafka-python's defaults ("raw, defaults"); the ratio column divides by "raw"

examples:
  python benchmarks/bench_ingest.py                                  # 1M events, both buses, local broker
  python benchmarks/bench_ingest.py --bus memory --events 200000 --repeats 5
  python benchmarks/bench_ingest.py --bus kafka --bootstrap 127.0.0.1:9092
  python benchmarks/bench_ingest.py --bus memory --record-sizes 1000 --profile 25
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import io
import os
import platform
import pstats
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from simulator.bus import Bus, wire
from simulator.bus.memory import MemoryBus
from simulator.stream import StreamLearner

PREFIX = "bench"
BLOCK_EVENTS = 5000  # the replay producer's default block between watermarks
POLL_RECORDS = 10_000  # what StreamLearner's consumer.poll asks for (the Consumer default)
PERIOD_SECONDS = 86_400
FIRST_TS = 1_500_000_000
PRODUCER = "bench-ingest"  # the producer identity its records carry and its manifest announces


@dataclass
class Stream:
    ts: np.ndarray
    users: np.ndarray  # str objects
    items: np.ndarray
    edges: list[int]


@dataclass
class Topic:
    run_id: str
    name: str
    record_size: int
    records: int  # all records: events, watermarks and end markers
    event_records: int
    manifest: dict  # what ReplayProducer.manifest would announce


@dataclass
class Result:
    bus: str
    record_size: int
    path: str
    seconds: list[float]
    records: int
    events: int
    event_records: int


def synthetic_stream(n: int, periods: int, seed: int) -> Stream:
    rng = np.random.default_rng(seed)

    def ids(count: int) -> np.ndarray:
        raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
        return np.array([base64.urlsafe_b64encode(row.tobytes())[:22].decode() for row in raw], dtype=object)

    user_pool, item_pool = ids(max(1, n // 20)), ids(max(1, n // 100))
    ts = np.sort(rng.integers(0, periods * PERIOD_SECONDS, size=n)) + FIRST_TS
    users = user_pool[rng.integers(0, len(user_pool), size=n)]
    items = item_pool[rng.integers(0, len(item_pool), size=n)]
    edges = [FIRST_TS + PERIOD_SECONDS * k for k in range(periods + 1)]
    return Stream(ts.astype(np.int64), users, items, edges)


def produce(bus: Bus, stream: Stream, partitions: int, record_size: int) -> Topic:
    """Send the stream as the replay producer does (see the module docstring)."""
    run_id = f"ingest-{record_size}-{uuid.uuid4().hex[:8]}"
    topic = wire.events_topic(PREFIX, run_id)
    bus.create_topic(topic, partitions, {"retention.ms": "-1"})
    unique, inverse = np.unique(stream.users, return_inverse=True)
    partition_of = np.array([wire.partition_for(u, partitions) for u in unique], dtype=np.int64)[inverse]
    producer = bus.producer()
    records = event_records = 0
    n = len(stream.ts)
    for lo in range(0, n, BLOCK_EVENTS):
        hi = min(n, lo + BLOCK_EVENTS)
        parts = partition_of[lo:hi]
        for p in np.unique(parts):
            rows = np.flatnonzero(parts == p) + lo
            for start in range(0, len(rows), record_size):
                chunk = rows[start : start + record_size]
                users = list(stream.users[chunk])
                value = wire.encode_events(stream.ts[chunk], users, list(stream.items[chunk]))
                producer.send(
                    topic,
                    value,
                    partition=int(p),
                    key=users[0].encode(),
                    headers=wire.headers(wire.EVENTS, row=int(chunk[0]), producer=PRODUCER),
                )
                event_records += 1
        next_ts = int(stream.ts[hi]) if hi < n else int(stream.ts[-1]) + 1
        for p in range(partitions):
            producer.send(
                topic,
                wire.encode_watermark(next_ts),
                partition=p,
                headers=wire.headers(wire.WATERMARK, producer=PRODUCER),
            )
        records += partitions
    for p in range(partitions):
        producer.send(topic, b"", partition=p, headers=wire.headers(wire.END, producer=PRODUCER))
    producer.close()  # flushes
    rows = [np.flatnonzero(partition_of == p) for p in range(partitions)]
    manifest = {
        "run_id": run_id,
        "schedule": stream.edges,
        "speed": "max",
        "n_events": n,
        "producer": PRODUCER,
        "partition_rows": [[int(r[0]), int(r[-1]) + 1] if len(r) else [0, 0] for r in rows],
        "end_watermark": int(stream.ts[-1]) + 1,
    }
    return Topic(run_id, topic, record_size, records + partitions + event_records, event_records, manifest)


class CountingEngine:
    """Stands in for learner.engine.Engine: takes each closed period, trains nothing."""

    def __init__(self, periods: int) -> None:
        self.phases = ["online"] * periods
        self.events = 0
        self.closed = 0

    def close_period(self, t: int, events) -> list:
        assert t == self.closed, f"period {t} closed out of order"
        self.closed += 1
        self.events += len(events)
        return []


def learner_path(bus: Bus, stream: Stream, topic: Topic) -> Callable[[], Callable[[], int]]:
    """Set-up outside the timer (the learner's producer, windows); returns the timed run."""

    def prepare() -> Callable[[], int]:
        engine = CountingEngine(len(stream.edges) - 1)
        learner = StreamLearner(
            bus,
            engine,
            topic.manifest,
            prefix=PREFIX,
            group=f"bench-{uuid.uuid4().hex}",
            deadletter=lambda record: None,
        )

        def run() -> int:
            learner.run()
            if engine.events != len(stream.ts) or engine.closed != len(engine.phases):
                raise RuntimeError(
                    f"learner saw {engine.events} events in {engine.closed} periods, "
                    f"expected {len(stream.ts)} in {len(engine.phases)}"
                )
            return learner.stats.records

        return run

    return prepare


def memory_poll_path(bus: MemoryBus, topic: Topic) -> Callable[[], Callable[[], int]]:
    def prepare() -> Callable[[], int]:
        consumer = bus.consumer(topic.name, f"bench-{uuid.uuid4().hex}")

        def run() -> int:
            seen = 0
            while batch := consumer.poll(0.0, POLL_RECORDS):
                seen += len(batch)
            consumer.close()
            return seen

        return run

    return prepare


def kafka_raw_path(bootstrap: str, topic: Topic, partitions: int, settings: dict) -> Callable[[], Callable[[], int]]:
    from kafka import KafkaConsumer, TopicPartition

    def prepare() -> Callable[[], int]:
        def run() -> int:
            consumer = KafkaConsumer(bootstrap_servers=bootstrap, **settings)
            tps = [TopicPartition(topic.name, p) for p in range(partitions)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek_to_beginning(tp)
            seen = idle = 0
            while seen < topic.records:
                batches = consumer.poll(timeout_ms=500, max_records=POLL_RECORDS)
                seen += sum(len(records) for records in batches.values())
                idle = 0 if batches else idle + 1
                if idle == 20:
                    raise RuntimeError(f"raw consumer stalled at {seen} of {topic.records} records")
            consumer.close(autocommit=False)
            return seen

        return run

    return prepare


def timed(prepare: Callable[[], Callable[[], int]], expected_records: int) -> float:
    run = prepare()
    gc.collect()
    start = time.perf_counter()
    seen = run()
    seconds = time.perf_counter() - start
    if seen != expected_records:
        raise RuntimeError(f"read {seen} records, the topic holds {expected_records}")
    return seconds


def profile(prepare: Callable[[], Callable[[], int]], lines: int) -> str:
    run = prepare()
    profiler = cProfile.Profile()
    profiler.runcall(run)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(lines)
    text = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(text) if line.lstrip().startswith("ncalls"))
    return "\n".join(text[start - 1 : start + lines + 1])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    import kafka
    import pandas as pd
    from kafka.record.util import crc32c_c

    crc = "native crc32c" if crc32c_c is not None else "pure-Python crc32c"
    versions = [
        f"Python {platform.python_version()}",
        f"kafka-python {kafka.__version__} ({crc})",
        f"numpy {np.__version__}",
        f"pandas {pd.__version__}",
    ]
    try:
        import orjson

        versions.append(f"orjson {orjson.__version__}")
    except ImportError:
        pass
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}; " + ", ".join(versions)


def table(results: list[Result]) -> str:
    lines = [
        "| bus | record size | path | median s | runs (s) | records/s | events/s | ratio to raw |",
        "|---|---|---|---|---|---|---|---|",
    ]
    raw = {(r.bus, r.record_size): statistics.median(r.seconds) for r in results if r.path in ("raw", "bus poll")}
    for r in results:
        median = statistics.median(r.seconds)
        base = raw.get((r.bus, r.record_size))
        ratio = f"{base / median:.3g}" if base else "-"
        runs = ", ".join(f"{s:.2f}" for s in r.seconds)
        size = "1" if r.record_size == 1 else f"up to {r.record_size:,} (mean {r.events / r.event_records:,.0f})"
        lines.append(
            f"| {r.bus} | {size} | {r.path} | {median:.2f} | {runs} | {r.records / median:,.0f} | "
            f"{r.events / median:,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events per topic (default 1,000,000)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path; the median is reported")
    parser.add_argument("--bus", choices=["memory", "kafka", "both"], default="both")
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="an existing broker (default: start a local one in a temp dir for the run)",
    )
    parser.add_argument(
        "--record-sizes",
        type=int,
        nargs="+",
        default=[1, wire.MAX_EVENTS_PER_RECORD],
        help="events per record: 1 (single-event records) and/or up to 1,000 (default: 1 1000)",
    )
    parser.add_argument("--periods", type=int, default=10, help="periods of the schedule (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--profile",
        type=int,
        metavar="LINES",
        default=0,
        help="also profile one learner run per topic (cProfile) and print the top LINES functions",
    )
    args = parser.parse_args()
    if not 1 <= min(args.record_sizes) <= max(args.record_sizes) <= wire.MAX_EVENTS_PER_RECORD:
        parser.error(f"record sizes must lie in 1..{wire.MAX_EVENTS_PER_RECORD}")

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = os.getloadavg()
    print(f"command: python benchmarks/bench_ingest.py {shlex.join(sys.argv[1:])}".rstrip())
    print(f"machine: {machine()}")
    print(f"date: {started}; load average at start {load_before[0]:.2f}", flush=True)
    stream = synthetic_stream(args.events, args.periods, args.seed)
    buses = ["memory", "kafka"] if args.bus == "both" else [args.bus]
    results: list[Result] = []
    profiles: list[str] = []
    with ExitStack() as stack:
        for name in buses:
            if name == "memory":
                bus: Bus = MemoryBus()
            else:
                from simulator.bus.kafka import CONSUMER_CONFIG, KafkaBus

                bootstrap = args.bootstrap
                if bootstrap is None:
                    from simulator.kafka_local import LocalKafka

                    print("starting a local Kafka broker ...", flush=True)
                    broker = LocalKafka(
                        stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-kafka-")),
                        port=0,
                        die_with_parent=True,
                    )
                    bootstrap = broker.up()
                    stack.callback(broker.down)
                bus = KafkaBus(bootstrap)
                stack.callback(bus.close)
            for size in args.record_sizes:
                start = time.perf_counter()
                topic = produce(bus, stream, args.partitions, size)
                print(
                    f"{name}: produced {args.events:,} events in {topic.event_records:,} event records "
                    f"(+{topic.records - topic.event_records:,} watermarks/ends) in "
                    f"{time.perf_counter() - start:.1f} s",
                    flush=True,
                )
                if name == "memory":
                    paths = {"bus poll": memory_poll_path(bus, topic), "learner": learner_path(bus, stream, topic)}
                else:
                    if args.bootstrap is not None:
                        stack.callback(_delete_topic, bootstrap, topic.name)
                    paths = {
                        "raw": kafka_raw_path(bootstrap, topic, args.partitions, dict(CONSUMER_CONFIG)),
                        "raw, defaults": kafka_raw_path(bootstrap, topic, args.partitions, {}),
                        "learner": learner_path(bus, stream, topic),
                    }
                times: dict[str, list[float]] = {path: [] for path in paths}
                for _ in range(args.repeats):
                    for path, prepare in paths.items():
                        times[path].append(timed(prepare, topic.records))
                for path, seconds in times.items():
                    results.append(Result(name, size, path, seconds, topic.records, args.events, topic.event_records))
                    print(f"  {path:14s} {', '.join(f'{s:.2f}' for s in seconds)} s", flush=True)
                if args.profile:
                    profiles.append(
                        f"### learner over {name}, records of up to {size:,} events\n\n```\n"
                        f"{profile(paths['learner'], args.profile)}\n```"
                    )
    load_after = os.getloadavg()
    print(f"\n{table(results)}\n")
    print(
        f"load average: {load_before[0]:.2f} at start, {load_after[0]:.2f} at end "
        f"(1-minute; {len(os.sched_getaffinity(0))} CPUs)"
    )
    for text in profiles:
        print(f"\n{text}")


def _delete_topic(bootstrap: str, topic: str) -> None:
    """Leave a broker that the user gave us as we found it."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()


if __name__ == "__main__":
    main()
