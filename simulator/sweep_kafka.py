"""Sweeps over Kafka (`rtsim sweep FILE --bus kafka://...`): the replay is produced once into a
retained topic, every job is one record of the sweep's jobs topic (partition i holds job i),
and `rtsim worker` processes (simulator/kafka_worker.py) share the partitions through Kafka's
group assignment. A worker commits a job's offset only after publishing its result, so the
job of a killed worker goes to another one, which resumes it from the run directory's
checkpoint when it can see it.

Topics (prefix: bus.prefix), all retained:

| topic | partitions | records |
|---|---|---|
| `<prefix>.events.<name>-replay` | replay.partitions | the replay, run id `<name>-replay` |
| `<prefix>.sweep.<name>.jobs` | one per job | `{sweep, spec, replay_run_id, job}` |
| `<prefix>.sweep.<name>.results` | 1 | `{job, state: running\\|done\\|failed, worker, time, ...}`; done adds `seconds`, `periods_csv`, `summary_md`; failed adds `error` |
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from simulator.bus import Bus, BusError, wire
from simulator.config import RunConfig
from simulator.sweep import STATES, Job, SweepDir, SweepError, SweepSpec

Report = Callable[[str], None]
WORKER_GROUP = "rtsim-sweep-workers"
RETAINED = {"retention.ms": "-1"}
# a sweep's jobs read one replay: keys that shape it are shared, never swept
SHARED_SECTIONS = ("data.", "replay.", "bus.")


def jobs_topic(prefix: str, name: str) -> str:
    return f"{prefix}.sweep.{name}.jobs"


def results_topic(prefix: str, name: str) -> str:
    return f"{prefix}.sweep.{name}.results"


def jobs_pattern(prefix: str) -> str:
    """Every sweep's jobs topic: a worker serves whichever sweeps are published."""
    return "^" + re.escape(prefix) + r"\.sweep\..+\.jobs$"


def replay_run_id(name: str) -> str:
    return f"{name}-replay"


def check_shared(spec: SweepSpec) -> None:
    for key in spec.grid:
        if key.startswith(SHARED_SECTIONS) or key in ("data", "replay", "bus"):
            raise SweepError(
                f"grid {key}: over Kafka every job reads one replay, so data.*, replay.* and bus.* keys "
                "cannot vary; move it to `set`, or run this grid without --bus"
            )


def publish(spec: SweepSpec, jobs: list[Job], bus: Bus, cfg: RunConfig, log, report: Report) -> None:
    """The replay (unless the topic already holds all of it) and one record per job (unless
    there already is one). A job that failed is sent again, after a `pending` result: its
    partition's owner runs it once more. A jobs topic of another sweep with this name is
    refused."""
    from simulator.producer import ReplayProducer
    from simulator.run import replay_settings

    prefix = cfg.bus.prefix
    producer = ReplayProducer(bus, log, replay_run_id(spec.name), replay_settings(cfg, cfg.preset))
    producer.publish_manifest()
    start = producer.resume_row()
    if start is None:
        report(f"replay {producer.topic}: complete from before")
    else:
        report(f"replay {producer.topic}: {len(log.ts) - start:,} events at full speed")
        producer.run(start_row=start)
    topic = jobs_topic(prefix, spec.name)
    bus.create_topic(topic, len(jobs), RETAINED)
    bus.create_topic(results_topic(prefix, spec.name), 1, RETAINED)
    recorded = read_jobs(bus, prefix, spec.name)
    if bus.partitions(topic) != len(jobs) or any(
        recorded.get(i, job.as_dict()) != job.as_dict() for i, job in enumerate(jobs)
    ):
        raise SweepError(
            f"Kafka already holds another sweep named {spec.name} ({topic}); give this one another name (--name)"
        )
    failed = {job_id for job_id, result in read_results(bus, prefix, spec.name).items() if result["state"] == "failed"}
    sender = bus.producer()
    for i, job in enumerate(jobs):
        if job.id in failed:  # pending first, so that a follower never reads the retry as failed
            send_result(
                bus, prefix, spec.name, {"job": job.id, "state": "pending", "worker": None, "time": time.time()}
            )
        if i not in recorded or job.id in failed:
            record = {
                "sweep": spec.name,
                "spec": spec.as_dict(),
                "replay_run_id": producer.run_id,
                "job": job.as_dict(),
            }
            sender.send(topic, json.dumps(record).encode(), partition=i, key=job.id.encode())
    sender.close()
    report(
        f"jobs: {len(jobs) - len(recorded)} published on {topic}, {len(failed)} failed ones again "
        f"({len(recorded)} from before)"
    )


def _read_all(bus: Bus, topic: str) -> list:
    """Every record of `topic`, up to its end now."""
    consumer = bus.consumer(topic, f"rtsim-sweep-reader-{time.time_ns()}")
    messages = []
    try:
        end = consumer.end_offsets()
        while any(consumer.positions().get(p, 0) < offset for p, offset in end.items()):
            messages += consumer.poll(1.0)
    finally:
        consumer.close()
    return messages


def read_jobs(bus: Bus, prefix: str, name: str) -> dict[int, dict]:
    """{partition: job dict} of the sweep's jobs topic (empty if it does not exist)."""
    topic = jobs_topic(prefix, name)
    try:
        bus.partitions(topic)
    except BusError:  # no such topic: no jobs yet
        return {}
    return {m.partition: json.loads(m.value)["job"] for m in _read_all(bus, topic)}


def read_spec(bus: Bus, prefix: str, name: str) -> dict:
    messages = _read_all(bus, jobs_topic(prefix, name))
    if not messages:
        raise SweepError(f"no sweep named {name} on {bus.url} (no records on {jobs_topic(prefix, name)})")
    return json.loads(messages[0].value)["spec"]


def read_results(bus: Bus, prefix: str, name: str) -> dict[str, dict]:
    """Per job id, its newest record; a done record is never replaced (a job that was given to
    a second worker may report twice, with the same rows)."""
    out: dict[str, dict] = {}
    for message in _read_all(bus, results_topic(prefix, name)):
        record = json.loads(message.value)
        if out.get(record["job"], {}).get("state") != "done":
            out[record["job"]] = record
    return out


def collect(bus: Bus, prefix: str, name: str, root: SweepDir) -> dict:
    """Write the sweep directory from the topics: sweep.json, and each done job's periods.csv
    and summary.md where this machine has no finished run directory of it. Returns the state."""
    jobs = read_jobs(bus, prefix, name)
    if not jobs:
        raise SweepError(f"no sweep named {name} on {bus.url} (no records on {jobs_topic(prefix, name)})")
    results = read_results(bus, prefix, name)
    state = {"format": 1, "spec": read_spec(bus, prefix, name), "coordinator": {"bus": bus.url}, "jobs": []}
    for _, job in sorted(jobs.items()):
        record = results.get(job["id"], {})
        entry = {**job, "state": record.get("state", "pending"), "worker": record.get("worker")}
        entry.update({k: record[k] for k in ("seconds", "error") if k in record})
        if record.get("state") == "done" and not root.finished(job["id"]):
            folder = root.jobs_root / job["id"]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "periods.csv").write_bytes(record["periods_csv"].encode())
            (folder / "summary.md").write_bytes(record["summary_md"].encode())
        state["jobs"].append(entry)
    root.path.mkdir(parents=True, exist_ok=True)
    root.save(state)
    return state


def per_worker(jobs: list[dict]) -> dict[str, dict[str, int]]:
    """{worker: {state: jobs}} for the jobs a worker has reported on."""
    out: dict[str, dict[str, int]] = {}
    for job in jobs:
        if job.get("worker"):
            out.setdefault(job["worker"], dict.fromkeys(STATES, 0))[job["state"]] += 1
    return out


def wait(
    bus: Bus,
    prefix: str,
    name: str,
    root: SweepDir,
    report: Report,
    observe: Callable[[list[dict]], None] = lambda jobs: None,
    poll_s: float = 2.0,
) -> dict:
    """Follow the results until every job is done or failed, reporting each change."""
    seen: dict[str, tuple] = {}
    while True:
        state = collect(bus, prefix, name, root)
        observe(state["jobs"])
        for job in state["jobs"]:
            now = (job["state"], job.get("worker"))
            if seen.get(job["id"]) != now and job["state"] != "pending":
                extra = job.get("error") or (f"in {job['seconds']:.1f}s" if job.get("seconds") else "")
                report(f"job {job['id']} {job['state']} on {job.get('worker')} {extra}".rstrip())
            seen[job["id"]] = now
        if all(job["state"] in ("done", "failed") for job in state["jobs"]):
            return state
        time.sleep(poll_s)


def job_result(job_id: str, worker: str, run_dir: Path, seconds: float) -> dict:
    return {
        "job": job_id,
        "state": "done",
        "worker": worker,
        "time": time.time(),
        "seconds": seconds,
        # bytes as they are (read_text would turn the CSV's \r\n into \n)
        "periods_csv": (run_dir / "periods.csv").read_bytes().decode(),
        "summary_md": (run_dir / "summary.md").read_bytes().decode(),
    }


def send_result(bus: Bus, prefix: str, name: str, record: dict, producer=None) -> None:
    """Publish one results record and wait until Kafka has it."""
    sender = producer or bus.producer()
    sender.send(
        results_topic(prefix, name),
        json.dumps(record).encode(),
        partition=0,
        key=record["job"].encode(),
        headers=wire.headers("sweep-" + record["state"]),
    )
    sender.flush()
    if producer is None:
        sender.close()
