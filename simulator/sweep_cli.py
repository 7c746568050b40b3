"""`rtsim sweep FILE | status DIR | report DIR`: grid sweeps (simulator/sweep.py)."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

SWEEP_HELP = textwrap.dedent("""\
    Run a grid sweep: every setting of the grid (the cartesian product of its lists) with
    every seed, each an ordinary run, on up to --workers local processes. Every key and
    value is checked before anything runs. The sweep directory <runs-dir>/<name>/ holds
    sweep.json (the jobs and their states), jobs/<job>/ (one run directory each) and
    report.md: per setting and strategy the mean over seeds with its 95% interval, and the
    best setting per metric, chosen on the validation periods and reported on the test
    periods. Running the same sweep again skips finished jobs and resumes the others.

    A sweep file (keys in `set` and `grid` are those of --set):

      name: sml-rounds            # the folder under --runs-dir (default: the file's name)
      preset: tiny
      set:
        learner.strategies.enabled: [sml, fine_tune]
      grid:
        learner.strategies.sml.rounds: [1, 2]
        learner.strategies.sml.step2.lr: [0.001, 0.01]
      seeds: 3                    # learner.seed = seed .. seed+2; or a list: [0, 7, 9]

    examples:
      rtsim sweep sweep.yaml --workers 2
      rtsim sweep sweep.yaml --dry-run          # check the file and list the jobs
      rtsim sweep status runs/sml-rounds        # jobs done / running / failed
      rtsim sweep report runs/sml-rounds        # rewrite report.md from the finished jobs

    Over Kafka (many machines): the replay is produced once, each job is a record of the
    sweep's jobs topic, and `rtsim worker` processes share them through Kafka's group
    assignment; a killed worker's job goes to another worker. Grid keys under data.,
    replay. and bus. are refused there (every job reads the one replay).

      rtsim worker --bus kafka://HOST:9092      # on every machine, as many as you like
      rtsim sweep sweep.yaml --bus kafka://HOST:9092
      rtsim sweep status sml-rounds --bus kafka://HOST:9092
      rtsim sweep report sml-rounds --bus kafka://HOST:9092""")

WORKER_HELP = textwrap.dedent("""\
    Serve sweeps over Kafka: join the consumer group rtsim-sweep-workers on every
    <prefix>.sweep.<name>.jobs topic and run the jobs Kafka assigns, one at a time, each
    as a learner of the sweep's replay topic, into <runs-dir>/<name>/jobs/<job>/ with
    checkpoints. A job's offset is committed only after its result is published, so the
    job of a worker that dies goes to another one (after about 6 s), which resumes it from
    its checkpoint when it shares the runs directory. Stops on Ctrl-C or SIGTERM; a job it
    was running goes back to the group.

    examples:
      rtsim worker --bus kafka://127.0.0.1:9092
      rtsim worker --bus kafka://broker:9092 --runs-dir /shared/runs --prefix lab""")


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sweep",
        help="run a grid of settings × seeds; `sweep status|report DIR`",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=SWEEP_HELP,
    )
    parser.add_argument("target", metavar="FILE|status|report", help="a sweep file, or what to do with a sweep")
    parser.add_argument(
        "sweep", nargs="?", metavar="DIR|NAME", help="status/report: the sweep directory (NAME with --bus)"
    )
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="local worker processes (default 1)")
    parser.add_argument("--runs-dir", default="runs", metavar="DIR", help="where the sweep directory goes (./runs)")
    parser.add_argument("--name", help="the sweep directory's name (default: the file's `name:` or its file name)")
    parser.add_argument("--data-dir", metavar="DIR", help="cache of prepared logs (default ~/.cache/rtsim/prepared)")
    parser.add_argument("--dry-run", action="store_true", help="check the file and list the jobs; run nothing")
    parser.add_argument("--bus", metavar="URL", help="kafka://HOST:PORT: publish the jobs for `rtsim worker`s")
    parser.add_argument(
        "--prefix", default="rtsim", help="topic prefix for status/report --bus (a sweep file sets bus.prefix)"
    )
    parser.add_argument("--no-wait", action="store_true", help="with --bus: publish the jobs and return")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve the sweep's progress (rtsim_sweep_jobs) for Prometheus (default 0: a free port)",
    )
    parser.set_defaults(func=handle_sweep)
    return parser


def add_worker_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "worker",
        help="run sweep jobs handed out over Kafka",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=WORKER_HELP,
    )
    parser.add_argument("--bus", required=True, metavar="URL", help="kafka://HOST:PORT")
    parser.add_argument("--prefix", default="rtsim", help="topic prefix of the sweeps to serve (default rtsim)")
    parser.add_argument("--runs-dir", default="runs", metavar="DIR", help="where job run directories go (./runs)")
    parser.set_defaults(func=handle_worker)
    return parser


def handle_worker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from simulator.kafka_worker import SweepWorker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = SweepWorker(_bootstrap(args.bus), args.prefix, args.runs_dir, _say)
    try:
        worker.run(stop)
    except KeyboardInterrupt:
        pass
    _say(f"worker {worker.name}: stopped after {worker.done} jobs")
    return 0


def _bootstrap(url: str) -> str:
    from simulator.sweep import SweepError

    if not url.startswith("kafka://"):
        raise SweepError(f"--bus {url}: sweeps share jobs over Kafka only; give kafka://HOST:PORT")
    return url[len("kafka://") :]


def handle_sweep(args: argparse.Namespace) -> int:
    from simulator.sweep import SweepError

    action, rest = args.target, [args.sweep] if args.sweep else []
    if action in ("status", "report"):
        if len(rest) != 1:
            what = "sweep name with --bus" if args.bus else "sweep directory"
            raise SweepError(f"rtsim sweep {action} takes one {what}, e.g. rtsim sweep {action} runs/NAME")
        root = Path(rest[0])
        if args.bus:  # the sweep directory is <runs-dir>/<name>, written from the topics
            from simulator.sweep import SweepDir
            from simulator.sweep_kafka import collect

            root = Path(args.runs_dir) / rest[0]
            bus = _kafka(args.bus)
            try:
                collect(bus, args.prefix, rest[0], SweepDir(root))
            finally:
                bus.close()
        return (show_status if action == "status" else _report)(root)
    if rest:
        raise SweepError(f"rtsim sweep takes one sweep file, got {action} {args.sweep}")
    return _run(args, Path(action))


def _run(args: argparse.Namespace, path: Path) -> int:
    from simulator.sweep import SweepDir, SweepError, expand, load_spec, setting_id, setting_label
    from simulator.sweep_report import write_sweep_report
    from simulator.worker import run_local

    if args.workers < 1:
        raise SweepError(f"--workers must be >= 1, got {args.workers}")
    spec = load_spec(path, args.name)
    jobs = expand(spec)
    settings = {job.setting: job.point for job in jobs}
    _say(f"rtsim sweep {spec.name}: {len(settings)} settings × {len(jobs) // len(settings)} seeds = {len(jobs)} jobs")
    for index, point in settings.items():
        _say(f"  {setting_id(index)}: {setting_label(point)}")
    if args.dry_run:
        for job in jobs:
            _say(f"  job {job.id}: --set {' --set '.join(job.overrides)}")
        return 0
    root = SweepDir(Path(args.runs_dir) / spec.name)
    if args.bus:
        return _run_kafka(args, spec, jobs, root)
    state = root.start(spec, jobs)
    skipped = sum(job["state"] == "done" for job in state["jobs"])
    if skipped:
        _say(f"{skipped} jobs finished before; not run again")
    _prepare(jobs, args.data_dir)
    started = time.perf_counter()
    metrics, stop_metrics = _metrics(args, spec)
    try:
        tally = run_local(root, state, args.workers, args.data_dir, _say, metrics.observe)
    finally:
        stop_metrics()
    report = write_sweep_report(root, state)
    _say(
        f"sweep {spec.name}: {tally['done']}/{len(jobs)} done, {tally['failed']} failed "
        f"in {time.perf_counter() - started:.0f}s; report: {report}"
    )
    if tally["failed"]:
        _say(f"run `rtsim sweep {path}` again to retry the failed jobs (their logs: {root.path / 'logs'})")
        return 1
    print()
    print(report.read_text())
    return 0


def _run_kafka(args: argparse.Namespace, spec, jobs, root) -> int:
    from dataclasses import replace

    from replay_data.prepared import prepare
    from simulator.sweep_kafka import check_shared, publish, wait
    from simulator.sweep_report import write_sweep_report

    check_shared(spec)
    cfg = jobs[0].config()
    cfg = replace(cfg, bus=replace(cfg.bus, url=args.bus))
    log, cached = prepare(cfg.data, args.data_dir, progress=sys.stderr.isatty())
    _say(f"{'cached' if cached else 'prepared'} log {log.path}")
    bus = _kafka(args.bus)
    try:
        publish(spec, jobs, bus, cfg, log, _say)
        if args.no_wait:
            _say(f"follow it with `rtsim sweep status {spec.name} --bus {args.bus} --prefix {cfg.bus.prefix}`")
            return 0
        _say("waiting for `rtsim worker --bus ...` processes to run the jobs (Ctrl-C stops waiting, not the jobs)")
        metrics, stop_metrics = _metrics(args, spec)
        try:
            state = wait(bus, cfg.bus.prefix, spec.name, root, _say, metrics.observe)
        finally:
            stop_metrics()
    finally:
        bus.close()
    report = write_sweep_report(root, state)
    failed = sum(job["state"] == "failed" for job in state["jobs"])
    _say(f"sweep {spec.name}: {len(jobs) - failed}/{len(jobs)} done, {failed} failed; report: {report}")
    return 1 if failed else 0


def _metrics(args: argparse.Namespace, spec):
    from simulator.sweep_metrics import SweepMetrics, serve_sweep_metrics

    metrics = SweepMetrics(spec.name, spec.preset or "demo", args.bus or "memory")
    return metrics, serve_sweep_metrics(metrics, spec.name, args.metrics_port, _say)


def _kafka(url: str):
    from simulator.bus.kafka import KafkaBus

    return KafkaBus(_bootstrap(url))


def _prepare(jobs, data_dir: str | None) -> None:
    """Each distinct log once, before the workers start, so no two of them prepare it at once."""
    from replay_data.prepared import cache_key, prepare

    seen = set()
    for job in jobs:
        data = job.config().data
        if cache_key(data) not in seen:
            seen.add(cache_key(data))
            log, cached = prepare(data, data_dir, progress=sys.stderr.isatty())
            _say(f"{'cached' if cached else 'prepared'} log {log.path}")


def show_status(path: Path) -> int:
    """Print the jobs by state and per worker; exit 0 when every job is done, else 1."""
    from simulator.sweep import STATES, SweepDir, coordinator_alive, counts

    root = SweepDir(path)
    state = root.load()
    jobs = state["jobs"]
    alive = coordinator_alive(state)
    tally = counts(jobs)
    print(f"sweep {state['spec']['name']}: " + ", ".join(f"{tally[s]} {s}" for s in STATES) + f" of {len(jobs)} jobs")
    if tally["running"] and not alive:
        print("the sweep's process is gone: its running jobs stopped; run the sweep again to resume them")
    for job in jobs:
        extra = job.get("error") or (f"{job['seconds']:.1f}s" if job.get("seconds") else "")
        print(f"  {job['id']:<16} {job['state']:<8} {job.get('worker') or '-':<24} {extra}")
    from simulator.sweep_kafka import per_worker

    for worker, by_state in per_worker(jobs).items():
        print(f"worker {worker}: " + ", ".join(f"{by_state[s]} {s}" for s in STATES if s != "pending"))
    return 0 if tally["done"] == len(jobs) else 1


def _report(path: Path) -> int:
    from simulator.sweep import SweepDir
    from simulator.sweep_report import write_sweep_report

    out = write_sweep_report(SweepDir(path))
    print(out.read_text())
    print(f"report: {out}")
    return 0


def _say(line: str) -> None:
    print(line, flush=True)
