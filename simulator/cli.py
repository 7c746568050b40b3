"""The `rtsim` command line."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from learner.checkpoint import CheckpointError
from replay_data.presets import preset_names
from replay_data.rejects import InputError
from replay_data.typed_config import ConfigError
from simulator.bus import BusError
from simulator.http_api import ApiConfigError
from simulator.report import ReportError

EPILOG = """\
examples:
  rtsim run                                   # the demo preset, every strategy, a few minutes
  rtsim prepare movielens --input ratings.csv # cut a real log into the preset's 40 periods
  rtsim run --preset movielens --input ratings.csv
  rtsim paper --preset demo --seeds 3         # SML, every baseline and every ablation: Table 1, ablations
  rtsim datasets                              # readers, presets and prepared logs
  rtsim kafka up                              # a local Kafka broker without Docker
  rtsim sweep sweep.yaml --workers 2          # a grid of settings × seeds (rtsim sweep -h)
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration")
    group.add_argument("--preset", help=f"named preset: {', '.join(preset_names())}")
    group.add_argument("--config", metavar="FILE", help="a YAML file layered over the preset")
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one setting, e.g. --set learner.seed=3 (repeatable)",
    )
    group.add_argument("--input", metavar="PATH", help="a raw log; prepared and cached on first use")
    group.add_argument("--data-dir", metavar="DIR", help="cache of prepared logs (default ~/.cache/rtsim/prepared)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    group.add_argument(
        "--allow-rejects",
        action="store_true",
        help="prepare even when over 20%% of the records are malformed or time outliers",
    )


def _add_bus_options(parser: argparse.ArgumentParser, speed: bool = True) -> None:
    group = parser.add_argument_group("transport")
    group.add_argument("--bus", metavar="URL", help="memory (default) or kafka://HOST:PORT")
    if speed:
        group.add_argument("--speed", metavar="X", help="event-time seconds per wall second, or max (default)")


def _add_serve_options(parser: argparse.ArgumentParser, side: str, keep: bool = True) -> None:
    group = parser.add_argument_group("serving (metrics and control API; 0 picks a free port)")
    prefix = "producer_" if side == "producer" else ""
    group.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help=f"{side} Prometheus metrics (default {9109 if side == 'producer' else 9108})",
    )
    group.add_argument(
        "--control-port",
        type=int,
        metavar="PORT",
        help=f"{side} control API (default {8766 if side == 'producer' else 8765})",
    )
    group.add_argument("--host", metavar="ADDR", help="bind address (default 127.0.0.1; another needs a token)")
    if keep:
        group.add_argument("--keep-serving", action="store_true", help="keep serving after the run ends, until Ctrl-C")
    parser.set_defaults(serve_prefix=prefix)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", help="run id (default <preset>-<UTC time>-<6 hex>)")
    parser.add_argument("--runs-dir", default="runs", metavar="DIR", help="root of run directories (default ./runs)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue RUN_DIR from its newest valid checkpoint, with its config.yaml"
    )


def _add_run_command_options(parser: argparse.ArgumentParser) -> None:
    """The options of `run` and `paper`."""
    _add_config_options(parser)
    _add_bus_options(parser)
    _add_serve_options(parser, "learner")
    _add_run_options(parser)
    parser.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="a seed sweep: N runs with learner.seed = seed, seed+1, ... on the same evaluation "
        "candidates, in RUN_DIR/seed-<s>/, with a combined summary.md (mean, 95%% interval, "
        "paired comparisons) and report",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtsim",
        formatter_class=_formatter,
        epilog=EPILOG,
        description="Streaming simulator for online retraining of recommender systems: replay a "
        "timestamped log period by period and compare SML, its ablations, fine-tune, "
        "full-retrain and SPMF side by side.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="replay a dataset and retrain every strategy (default: demo)",
        formatter_class=_formatter,
        description=textwrap.dedent("""\
        Replay a prepared log period by period: evaluate every enabled strategy on each
        closed period (test-then-train), retrain it, and write runs/<run-id>/ with
        config.yaml, periods.csv and summary.md (the paper's Table 1 and Table 2).

        examples:
          rtsim run
          rtsim run --preset movielens --input ../shared/data/real/movielens-latest-small/ratings.csv
          rtsim run --preset tiny --set learner.strategies.enabled=[sml,fine_tune] --set learner.strategies.serving=sml
          rtsim run --preset tiny --bus kafka://127.0.0.1:9092     # the same run through Kafka"""),
    )
    _add_run_command_options(run)
    run.set_defaults(func=_cmd_run)

    paper = sub.add_parser(
        "paper",
        help="the paper's whole comparison: SML, every baseline and every ablation in one run",
        formatter_class=_formatter,
        description=textwrap.dedent("""\
        `rtsim run` with every strategy rtsim ships enabled and SML serving: SML, the
        baselines and SML's ablations (sml_cnn, sml_fc, sml_n, sml_s, sml_fp), and any
        strategy module added to learner/strategies/ later. summary.md and the report
        hold Table 1 for every method with the paper's RI column (SML's relative
        improvement over it) and the ablation table (each variant's drop from SML).
        --set options still apply after the lineup, so they can narrow it.

        examples:
          rtsim paper --preset demo
          rtsim paper --preset demo --seeds 3
          rtsim paper --preset movielens --input ../shared/data/real/movielens-latest-small/ratings.csv"""),
    )
    _add_run_command_options(paper)
    paper.set_defaults(func=_cmd_paper)

    replay = sub.add_parser(
        "replay",
        help="the replay producer alone: push a prepared log onto the bus",
        formatter_class=_formatter,
        description=textwrap.dedent("""\
        Publish the run manifest and replay the preset's prepared log onto
        <prefix>.events.<run-id> at --speed (event-time seconds per wall second), with
        watermarks on every partition and an end marker. Pair it with `rtsim learn`.

        examples:
          rtsim kafka up
          rtsim replay --preset demo --bus kafka://127.0.0.1:9092
          rtsim replay --preset movielens --input ratings.csv --bus kafka://127.0.0.1:9092 --speed 86400"""),
    )
    _add_config_options(replay)
    _add_bus_options(replay)
    _add_serve_options(replay, "producer", keep=False)
    replay.add_argument("--run-id", help="run id (default <preset>-<UTC time>-<6 hex>)")
    replay.set_defaults(func=_cmd_replay)

    learn = sub.add_parser(
        "learn",
        help="the learner alone: consume a replay from the bus and retrain",
        formatter_class=_formatter,
        description=textwrap.dedent("""\
        Take the run manifest from <prefix>.runs (the newest run, or --run-id; waits for
        one), consume its events, cut period windows and retrain every strategy. Never
        opens the prepared log. Writes runs/<run-id>/ like `rtsim run`.

        example:
          rtsim learn --bus kafka://127.0.0.1:9092"""),
    )
    learn.add_argument("--preset", help="learner settings of this preset (default: the run's preset)")
    learn.add_argument("--config", metavar="FILE", help="a YAML file layered over the preset")
    learn.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one setting (repeatable)",
    )
    _add_bus_options(learn, speed=False)
    _add_serve_options(learn, "learner")
    _add_run_options(learn)
    learn.add_argument("--wait", type=float, default=600.0, metavar="S", help="seconds to wait for a run manifest")
    learn.set_defaults(func=_cmd_learn)

    prepare = sub.add_parser(
        "prepare",
        help="read a raw log into a cached, period-cut event log",
        formatter_class=_formatter,
        description=textwrap.dedent("""\
        Read a raw log with the DATASET reader (or the preset of that name), apply the
        preprocessing steps, sort by (ts, user, item), cut it into periods and cache it.
        Prints the counts before and after every step; preparing again hits the cache.

        examples:
          rtsim prepare movielens --input ../shared/data/real/movielens-latest-small/ratings.csv
          rtsim prepare yelp --input yelp_academic_dataset_review.json --set data.reader.min_stars=4
          rtsim prepare adressa --input three_month.tar.gz
          rtsim prepare synthetic-business --set data.reader.scale=0.1"""),
    )
    prepare.add_argument("dataset", help="a preset (yelp, adressa, movielens, synthetic-*) or a reader name")
    _add_config_options(prepare)
    prepare.add_argument("--strict", action="store_true", help="stop at the first malformed record")
    prepare.add_argument("--force", action="store_true", help="prepare again even when cached")
    prepare.set_defaults(func=_cmd_prepare)

    datasets = sub.add_parser(
        "datasets",
        help="list readers, presets and prepared logs",
        formatter_class=_formatter,
        description=textwrap.dedent("""\
        List the dataset readers, the presets, and the prepared logs in the cache.

        example:
          rtsim datasets --data-dir ~/.cache/rtsim/prepared"""),
    )
    datasets.add_argument("--data-dir", metavar="DIR", help="cache of prepared logs")
    datasets.set_defaults(func=_cmd_datasets)

    export = sub.add_parser(
        "export-sml",
        help="write a prepared log in the SML authors' file layout",
        formatter_class=_formatter,
        description=textwrap.dedent("""\
        Write information.npy, train/<t>.npy and test/<t>.npy (user, positive, 999
        negatives drawn by rtsim's evaluation rule and seed), so the authors' code can run
        on the same data and candidates.

        example:
          rtsim export-sml ~/.cache/rtsim/prepared/movielens-0123abcd ./sml-data/movielens"""),
    )
    export.add_argument("prepared", help="a prepared log folder (see `rtsim datasets`)")
    export.add_argument("out", help="output folder")
    export.add_argument("--seed", type=int, default=0, help="the run seed whose evaluation negatives to use")
    export.set_defaults(func=_cmd_export)

    from simulator.ctl import add_ctl_parser
    from simulator.kafka_cli import add_kafka_parser
    from simulator.monitor_cli import add_monitor_parser

    add_kafka_parser(sub)
    add_monitor_parser(sub)
    add_ctl_parser(sub)
    from simulator.report import add_report_parser

    add_report_parser(sub)
    from simulator.sweep_cli import add_sweep_parser, add_worker_parser

    add_sweep_parser(sub)
    add_worker_parser(sub)
    return parser


def _progress(args) -> bool:
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def _resolve(args, preset: str | None = None):
    from simulator.config import resolve

    return resolve(args.preset or preset, args.config, _cli_overrides(args), getattr(args, "input", None))


def _cli_overrides(args) -> list[str]:
    """Flags that are shorthands for --set, appended after the explicit --set options."""
    overrides = list(args.overrides)
    side = getattr(args, "serve_prefix", "")
    for flag, key in (
        ("bus", "bus.url"),
        ("speed", "replay.speed"),
        ("host", "serve.host"),
        ("metrics_port", f"serve.{side}metrics_port"),
        ("control_port", f"serve.{side}control_port"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides


def _cmd_prepare(args) -> int:
    from replay_data.prepared import prepare

    if args.strict:
        args.overrides.append("data.strict=true")
    if args.dataset in preset_names():
        cfg = _resolve(args, args.dataset)
    else:  # a reader name: the preset's schedule and phases, this reader
        args.overrides.insert(0, f"data.dataset={args.dataset}")
        cfg = _resolve(args, "movielens")
    log, cached = prepare(
        cfg.data, args.data_dir, progress=_progress(args), force=args.force, allow_rejects=args.allow_rejects
    )
    manifest = log.manifest
    print(f"{'cached' if cached else 'prepared'}: {log.path}")
    print(
        json.dumps(
            {
                "rejected": manifest["rejected"],
                "preprocess": manifest["preprocess"],
                "counts": manifest["counts"],
                "schedule": _schedule_summary(manifest),
            },
            indent=2,
        )
    )
    return 0


def _schedule_summary(manifest: dict) -> dict:
    """Where the schedule lies and which events were too far from the log's bulk to shape it."""

    def day(ts: int) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    edges = manifest["schedule"]["edges"]
    summary = {"periods": len(edges) - 1, "from": day(edges[0]), "to": day(edges[-1])}
    if "bulk" in manifest:  # logs prepared before the rule have no bulk
        span = manifest["bulk"]
        summary.update(outlier_before=day(span["first"]), outlier_after=day(span["last"]), rule=span["rule"])
    return summary


def _cmd_datasets(args) -> int:
    from replay_data.prepared import default_cache_root, list_prepared
    from replay_data.presets import load_preset
    from replay_data.readers import READER_HELP

    print("readers:")
    for name, text in READER_HELP.items():
        print(f"  {name:<20} {text}")
    print("  synthetic-news       generated news-like stream (synthetic-business: Yelp-like)")
    print("\npresets:")
    for name in preset_names():
        print(f"  {name:<20} {load_preset(name).get('description', '')}")
    root = args.data_dir or default_cache_root()
    logs = list_prepared(root)
    print(f"\nprepared logs in {root}:" + ("" if logs else " none yet (rtsim prepare ...)"))
    for entry in logs:
        print(
            f"  {entry['dataset']:<20} {entry['events']:>10,} events {entry['users']:>9,} users "
            f"{entry['items']:>9,} items {entry['periods']:>3} periods  {entry['path']}"
        )
    return 0


def _cmd_export(args) -> int:
    from replay_data.prepared import load
    from simulator.export_sml import export_sml

    print(json.dumps(export_sml(load(args.prepared), args.out, seed=args.seed, progress=sys.stderr.isatty()), indent=2))
    return 0


def _cmd_run(args) -> int:
    from simulator.run import run_embedded
    from simulator.rundir import RunDir, new_run_id

    if args.seeds is not None and args.resume:  # before any work: the sweep resumes by its --run-id
        raise ConfigError("--seeds with --resume: repeat the sweep with --run-id instead; finished seeds are kept")
    _apply_resume(args)
    cfg = _resolve(args)
    log, cached = _prepare(cfg, args)
    if args.seeds is not None:
        return _run_seeds(args, cfg, log, cached)
    run_dir = RunDir(args.runs_dir, args.run_id or new_run_id(cfg.preset)).create(cfg)
    if args.data_dir:
        run_dir.data_dir_file.write_text(str(Path(args.data_dir).resolve()))
    print(
        f"rtsim run {run_dir.run_id}: preset {cfg.preset}, {len(log.ts):,} events in "
        f"{len(log.phases)} periods over the {cfg.bus.url} bus ({'cached' if cached else 'prepared'} "
        f"log {log.path})",
        flush=True,
    )
    with run_dir.removed_if_refused():
        run_embedded(cfg, log, run_dir, report=_say, keep_serving=args.keep_serving, resume=bool(args.resume))
    print()
    print(run_dir.summary_md.read_text())
    print(f"run directory: {run_dir.path}")
    return 0


def _cmd_paper(args) -> int:
    from learner.strategies import paper_lineup

    # before the user's --set options, which may still narrow or reorder the lineup
    lineup = paper_lineup()
    args.overrides[:0] = [f"learner.strategies.enabled=[{','.join(lineup)}]", "learner.strategies.serving=sml"]
    return _cmd_run(args)


def _run_seeds(args, cfg, log, cached) -> int:
    from simulator.rundir import RunDir, new_run_id
    from simulator.seeds import run_seeds

    root = RunDir(args.runs_dir, args.run_id or new_run_id(cfg.preset))
    print(
        f"rtsim run {root.run_id}: seed sweep of {args.seeds} seeds from learner.seed={cfg.learner.seed}, "
        f"preset {cfg.preset}, {len(log.ts):,} events in {len(log.phases)} periods "
        f"({'cached' if cached else 'prepared'} log {log.path})",
        flush=True,
    )
    path = run_seeds(cfg, log, root, args.seeds, report=_say, keep_serving=args.keep_serving)
    print()
    print((path / "summary.md").read_text())
    print(f"run directory: {path}")
    return 0


def _cmd_replay(args) -> int:
    from simulator.run import replay
    from simulator.rundir import new_run_id

    cfg = _resolve(args)
    log, _ = _prepare(cfg, args)
    replay(cfg, log, args.run_id or new_run_id(cfg.preset), report=_say)
    return 0


def _cmd_learn(args) -> int:
    from simulator.config import resolve
    from simulator.run import learn

    _apply_resume(args)
    overrides = _cli_overrides(args)
    preset = args.preset
    if preset is None and args.config is None:  # the learner settings of the run's own preset
        from simulator.run import connect
        from simulator.stream import find_manifest

        base = resolve("demo", args.config, overrides)
        bus = connect(base)
        try:
            preset = find_manifest(bus, base.bus.prefix, args.run_id, args.wait).get("preset", "demo")
        finally:
            bus.close()
    cfg = resolve(preset, args.config, overrides)
    learn(
        cfg,
        args.runs_dir,
        args.run_id,
        report=_say,
        wait_s=args.wait,
        keep_serving=args.keep_serving,
        resume=bool(args.resume),
    )
    return 0


def _apply_resume(args) -> None:
    """--resume RUN_DIR: that run's id, root and resolved config (flags still override)."""
    if not args.resume:
        return
    run_dir = Path(args.resume)
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(
            f"--resume {run_dir} is not a run directory (no config.yaml); give the folder "
            "rtsim run or rtsim learn wrote, e.g. runs/<run-id>"
        )
    args.run_id, args.runs_dir = run_dir.name, str(run_dir.parent)
    args.config = args.config or str(run_dir / "config.yaml")
    from simulator.rundir import RunDir

    recorded = RunDir(args.runs_dir, args.run_id).data_dir_file
    if getattr(args, "data_dir", "") is None and recorded.exists():  # `learn` has no --data-dir
        args.data_dir = recorded.read_text()


def _prepare(cfg, args):
    from replay_data.prepared import prepare

    return prepare(cfg.data, args.data_dir, progress=_progress(args), allow_rejects=args.allow_rejects)


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])])
    try:
        return args.func(args)
    # only the project's own error types are the user's to fix; anything else is a bug and
    # keeps its traceback
    except (ConfigError, InputError, BusError, TimeoutError, CheckpointError, ReportError, ApiConfigError) as err:
        print(f"rtsim: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno == errno.EADDRINUSE:  # a port taken: the message names it and the option
            print(f"rtsim: error: {err}", file=sys.stderr)
        elif err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
            print(
                f"rtsim: error: cannot write {err.filename or 'a file'}: {err.strerror}; free disk space "
                "or choose another --runs-dir / --data-dir",
                file=sys.stderr,
            )
        else:
            raise
        return 2
    except KeyboardInterrupt:
        print("rtsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
