"""Running sweep jobs (simulator/sweep.py): one job as one ordinary run (`run_job`), and a
local pool of worker processes that the coordinator (`run_local`) feeds and watches.

A job's progress lines go to `logs/<job>.log`; the coordinator prints one line per job
start and end and keeps sweep.json current."""

from __future__ import annotations

import concurrent.futures as futures
import fcntl
import multiprocessing
import os
import queue
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

from simulator.rundir import RunDir
from simulator.sweep import Job, SweepDir, counts

Report = Callable[[str], None]
_events: multiprocessing.Queue | None = None  # a pool process's line back to the coordinator


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@contextmanager
def job_lock(root: SweepDir, job_id: str) -> Iterator[None]:
    """Held while a process works on a job: a second one (a job handed to another worker
    while its first one still runs) waits, then finds it finished or resumes it."""
    root.jobs_root.mkdir(parents=True, exist_ok=True)
    with open(root.jobs_root / f".{job_id}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS if the holder is killed
        yield


@contextmanager
def job_log(root: SweepDir, job_id: str) -> Iterator[tuple[Report, list[str]]]:
    """The job's log as a report function, and a list that receives the job's failure in
    one line: an exception inside is written to the log in full and kept as data, so one
    bad job never stops its worker."""
    path = root.log_file(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    failure: list[str] = []
    with open(path, "a") as log:

        def say(line: str) -> None:
            log.write(line + "\n")
            log.flush()

        try:
            yield say, failure
        except Exception as err:  # noqa: BLE001 - the job's failure, reported as data
            say(traceback.format_exc())
            failure.append(f"{type(err).__name__}: {err}".splitlines()[0])


def open_run_dir(job: Job, root: SweepDir, sweep_name: str) -> tuple[RunDir, bool]:
    """The job's run directory and whether to resume it: a directory with a checkpoint
    resumes from it; one without (a job killed before its first checkpoint) starts again
    from empty, as periods.csv is appended to."""
    run_dir = root.run_dir(job, sweep_name)
    resume = any(run_dir.checkpoints.glob("ckpt-*.pt"))
    if run_dir.path.exists() and not resume:
        shutil.rmtree(run_dir.path)
    return run_dir, resume


def run_job(job: Job, root: SweepDir, sweep_name: str, data_dir: str | None, report: Report) -> Path:
    """Run `job` (producer and learner in this process) into its run directory."""
    from replay_data.prepared import prepare
    from simulator.run import run_embedded

    with job_lock(root, job.id):
        run_dir = root.run_dir(job, sweep_name)
        if root.finished(job.id):
            return run_dir.path
        cfg = job.config()
        run_dir, resume = open_run_dir(job, root, sweep_name)
        log, _ = prepare(cfg.data, data_dir, progress=False)
        run_dir.create(cfg)
        run_embedded(cfg, log, run_dir, report=report, resume=resume)
        return run_dir.path


def share_of_cores(slot: int, workers: int, cores: list[int]) -> list[int]:
    """The cores the pool's `slot`-th process may run on: `cores` cut into `workers` blocks
    (the last takes the remainder), one core each when there are more workers than cores.
    Each job's torch threads then follow its block (SML's default is every core it may
    run on), so two jobs on two cores do not run four threads."""
    if workers >= len(cores):
        return [cores[slot % len(cores)]]
    size = len(cores) // workers
    return cores[slot * size : None if slot == workers - 1 else (slot + 1) * size]


def _pool_init(events: multiprocessing.Queue, slots: Synchronized, workers: int) -> None:
    global _events
    _events = events
    if workers > 1:
        with slots.get_lock():
            slot, slots.value = slots.value, slots.value + 1
        os.sched_setaffinity(0, share_of_cores(slot, workers, sorted(os.sched_getaffinity(0))))


def _pool_job(job_data: dict, root: str, sweep_name: str, data_dir: str | None) -> dict:
    """A pool process runs one job; failures come back as data, so one bad job never stops
    the pool."""
    job, sweep = Job.from_dict(job_data), SweepDir(root)
    worker, started = worker_name(), time.time()
    if _events is not None:
        _events.put({"id": job.id, "state": "running", "worker": worker, "started": started})
    with job_log(sweep, job.id) as (say, failure):
        run_job(job, sweep, sweep_name, data_dir, say)
    if failure:
        return {
            "id": job.id,
            "state": "failed",
            "worker": worker,
            "error": failure[0],
            "seconds": time.time() - started,
        }
    return {"id": job.id, "state": "done", "worker": worker, "seconds": time.time() - started}


def run_local(
    root: SweepDir,
    state: dict,
    workers: int,
    data_dir: str | None,
    report: Report,
    observe: Callable[[list[dict]], None] = lambda jobs: None,
    poll_s: float = 0.5,
) -> dict[str, int]:
    """Run every job of `state` not done yet on `workers` local processes; returns the counts
    by state. sweep.json is rewritten, and `observe` called with the jobs, at every change."""
    jobs = {job["id"]: job for job in state["jobs"]}
    todo = [job for job in state["jobs"] if job["state"] != "done"]
    total = len(jobs)
    context = multiprocessing.get_context("spawn")  # torch and numba threads do not survive fork
    events = context.Queue()

    def apply(update: dict) -> None:
        job = jobs[update["id"]]
        if update["state"] == "running" and job["state"] in ("done", "failed"):
            return  # the start event came through the queue after the result
        job.update(update)
        root.save(state)
        observe(state["jobs"])
        tally = counts(state["jobs"])
        where = f"on {update['worker']}"
        if update["state"] == "running":
            report(f"job {job['id']} started {where}  [{tally['done']}/{total} done, {tally['running']} running]")
        elif update["state"] == "done":
            report(f"job {job['id']} done in {update['seconds']:.1f}s  [{tally['done']}/{total} done]")
        else:
            log = root.log_file(job["id"])
            report(f"job {job['id']} FAILED {where}: {update['error']} (log: {log})")

    def drain() -> None:
        while True:
            try:
                apply(events.get_nowait())
            except queue.Empty:
                return

    observe(state["jobs"])
    if not todo:
        return counts(state["jobs"])
    processes = min(workers, len(todo))
    initargs = (events, context.Value("i", 0), processes)
    with futures.ProcessPoolExecutor(processes, context, _pool_init, initargs) as pool:
        pending = {
            pool.submit(_pool_job, job, str(root.path), state["spec"]["name"], data_dir): job["id"] for job in todo
        }
        try:
            while pending:
                finished, _ = futures.wait(pending, timeout=poll_s, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    job_id = pending.pop(future)
                    try:
                        apply(future.result())
                    except Exception as err:  # noqa: BLE001 - e.g. BrokenProcessPool: a worker process died
                        apply({"id": job_id, "state": "failed", "worker": "?", "error": f"{type(err).__name__}: {err}"})
                drain()  # after the results: a finished worker may have started its next job
        except KeyboardInterrupt:
            for job in jobs.values():
                if job["state"] == "running":
                    job["state"] = "pending"  # resumed from its checkpoint by the next run of the sweep
            root.save(state)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return counts(state["jobs"])
