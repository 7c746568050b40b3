"""`rtsim worker --bus kafka://...`: one worker of sweeps over Kafka (simulator/sweep_kafka.py).

It joins the consumer group `rtsim-sweep-workers` on every sweep's jobs topic; Kafka's group
assignment hands it partitions, each holding one job. It takes one job at a time and runs it
as a learner reading the sweep's replay topic from the start, into
<runs-dir>/<sweep>/jobs/<job>/ with checkpoints. It publishes the result, then commits the
job's offset: a worker killed before that loses its partitions after the session timeout and
another worker gets the job again.

While a job runs (in a thread), the main thread keeps polling with every partition paused,
so the worker stays in the group however long the job takes, and takes part in rebalances.
A job whose partition moved away meanwhile is finished anyway: its new owner waits for the
job's lock (worker.job_lock) when it shares the runs directory, then publishes the finished
run instead of running it again; elsewhere it computes the same rows.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from simulator.sweep import Job, SweepDir
from simulator.sweep_kafka import WORKER_GROUP, job_result, jobs_pattern, send_result
from simulator.worker import job_lock, job_log, open_run_dir, worker_name

Report = Callable[[str], None]
# a killed worker's jobs move after this long without heartbeats (the broker's minimum)
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_MS = 1_000
POLL_MS = 500


def learn_job(
    job: Job, root: SweepDir, sweep: str, bus_url: str, manifest: dict, report: Report, on_start: Callable[[], None]
) -> Path:
    """Run `job` as a learner of the replay in `manifest` into its run directory (resuming
    from its checkpoint if it has one); returns the run directory. on_start: called once
    this process holds the job's lock and is about to run it."""
    from learner.metrics import LearnerMetrics
    from simulator.run import Endpoints, _learn, connect, load_checkpoint, run_labels

    with job_lock(root, job.id):
        if root.finished(job.id):
            report(f"job {job.id}: finished by an earlier worker; publishing it")
            return root.run_dir(job, sweep).path
        on_start()
        cfg = job.config()
        cfg = replace(cfg, bus=replace(cfg.bus, url=bus_url))
        run_dir, resume = open_run_dir(job, root, sweep)
        state = load_checkpoint(run_dir, report) if resume else None
        endpoints = Endpoints(report, cfg)
        bus = connect(cfg)
        try:
            topic_partitions = bus.partitions(f"{cfg.bus.prefix}.events.{manifest['run_id']}")
            cfg = replace(cfg, replay=replace(cfg.replay, partitions=topic_partitions))
            run_dir.create(cfg)
            metrics = LearnerMetrics(run_labels(cfg, run_dir.run_id, cfg.preset))
            endpoints.metrics("learner", metrics.registry, cfg, "metrics_port", "--set serve.metrics_port=PORT")
            # a group of its own per attempt: the learner starts at its group's committed offsets
            group = f"rtsim-sweep-{sweep}-{job.id}-{uuid.uuid4().hex[:8]}"
            _learn(bus, cfg, manifest, run_dir, report, threading.Event(), metrics, endpoints, state, group=group)
        finally:
            endpoints.close()
            bus.close()
        return run_dir.path


class SweepWorker:
    def __init__(self, bootstrap: str, prefix: str, runs_dir: str, report: Report, wait_s: float = 600.0) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.runs_dir = Path(runs_dir)
        self.report = report
        self.wait_s = wait_s
        self.name = worker_name()
        self.done = 0
        self._manifests: dict[str, dict] = {}

    def run(self, stop: threading.Event) -> None:
        """Take jobs until `stop` is set. A job still running then is left uncommitted: Kafka
        gives it to another worker, which resumes it from its checkpoint."""
        from kafka import KafkaConsumer
        from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

        from simulator.bus.kafka import KafkaBus

        bus = KafkaBus(self.bootstrap)
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=WORKER_GROUP,
            client_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
            metadata_max_age_ms=3_000,  # a new sweep's jobs topic is seen within seconds
            partition_assignment_strategy=(StickyPartitionAssignor,),  # running jobs stay put
        )
        consumer.subscribe(pattern=jobs_pattern(self.prefix))
        self.report(f"worker {self.name}: waiting for jobs on {jobs_pattern(self.prefix)} at {self.bootstrap}")
        try:
            while not stop.is_set():
                batch = consumer.poll(timeout_ms=POLL_MS, max_records=1)
                for tp, records in batch.items():
                    self._take(consumer, bus, tp, records[0], stop)
        finally:
            consumer.close(autocommit=False)
            bus.close()

    def _take(self, consumer, bus, tp, record, stop: threading.Event) -> None:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        message = json.loads(record.value)
        job, sweep = Job.from_dict(message["job"]), message["sweep"]
        root = SweepDir(self.runs_dir / sweep)
        self.report(f"job {sweep}/{job.id}: taken (partition {tp.partition})")

        def on_start() -> None:  # in the job's thread, once it holds the job's lock
            send_result(
                bus, self.prefix, sweep, {"job": job.id, "state": "running", "worker": self.name, "time": time.time()}
            )

        outcome: dict = {}
        thread = threading.Thread(
            target=self._execute, args=(job, sweep, root, message, bus.url, on_start, outcome), daemon=True
        )
        started = time.time()
        thread.start()
        while thread.is_alive() and not stop.is_set():
            consumer.pause(*consumer.assignment())
            for other, records in consumer.poll(timeout_ms=POLL_MS).items():
                consumer.seek(other, records[0].offset)  # not now: read again once this job is done
            thread.join(0)
        if thread.is_alive():  # stopped: the job goes back to the group uncommitted
            self.report(f"job {sweep}/{job.id}: left unfinished; another worker resumes it")
            return
        consumer.resume(*consumer.assignment())
        if "error" in outcome:
            record_out = {"job": job.id, "state": "failed", "worker": self.name, "time": time.time(), **outcome}
        else:
            record_out = job_result(job.id, self.name, outcome["run_dir"], time.time() - started)
        send_result(bus, self.prefix, sweep, record_out)
        try:  # only now: a worker killed before this point leaves the job to another one
            consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
            if tp in consumer.assignment():  # a rebalance meanwhile rewinds to the last commit
                consumer.seek(tp, record.offset + 1)
        except KafkaError as err:
            self.report(f"job {sweep}/{job.id}: commit refused ({type(err).__name__}); its new owner publishes it too")
        self.done += record_out["state"] == "done"
        self.report(f"job {sweep}/{job.id}: {record_out['state']} in {time.time() - started:.1f}s")

    def _execute(
        self, job: Job, sweep: str, root: SweepDir, message: dict, url: str, on_start: Callable[[], None], outcome: dict
    ) -> None:
        with job_log(root, job.id) as (say, failure):
            manifest = self._manifest(url, message["replay_run_id"], job)
            outcome["run_dir"] = learn_job(job, root, sweep, url, manifest, say, on_start)
        if failure:
            outcome["error"] = failure[0]

    def _manifest(self, url: str, run_id: str, job: Job) -> dict:
        if run_id not in self._manifests:
            from simulator.run import connect
            from simulator.stream import find_manifest

            cfg = job.config()
            bus = connect(replace(cfg, bus=replace(cfg.bus, url=url)))
            try:
                self._manifests[run_id] = find_manifest(bus, cfg.bus.prefix, run_id, self.wait_s)
            finally:
                bus.close()
        return self._manifests[run_id]
