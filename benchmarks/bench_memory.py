"""Where a run's memory goes: resume a copy of a run directory from one of its checkpoints and
sample the learner every 50 ms: its resident set, glibc's heap and mmapped bytes, and the
phase it is in. Prints the peak of each phase and writes OUT/timeline.tsv and
OUT/memory.png.

A phase is the outermost learner call that names one: a strategy's retrain, growing the
tables for new users and items, the evaluation candidates, scoring, the table health check,
a checkpoint's save or load; everything else (ingest, reports) is "other". Large tensors
(the embedding and Adam tables) live in mmapped blocks, so a jump of the mmapped line with
no phase that allocates says some tables are kept alive twice.

The run directory is left as it was: the checkpoint is hard-linked into OUT/run (a resumed run
writes checkpoints by rename and only unlinks old ones), the rest is copied. With --kafka the
copy's broker state is served by a broker this script starts, as bench_replay.py does.
`plot` draws several timelines on one figure, e.g. before and after a change.

examples:
  python benchmarks/bench_memory.py run runs/adressa-full --from-period 60 --kafka --out /tmp/mem
  python benchmarks/bench_memory.py plot /tmp/before/timeline.tsv /tmp/after/timeline.tsv --labels before after -o memory.png
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from learner.memory import resident_bytes
from simulator.cli import main as rtsim
from simulator.kafka_local import LocalKafka, free_port

INTERVAL_S = 0.05
MIB = 2**20
# (file, function) of the calls that name a phase; a strategy's retrain is named by the strategy
PHASES = {
    ("candidates.py", "sample_eval_candidates"): "evaluation candidates",
    ("evaluation.py", "rank_positives"): "scoring",
    ("health.py", "table_health"): "table health",
    ("checkpoint.py", "save"): "checkpoint save",
    ("run.py", "load_checkpoint"): "checkpoint load",
}


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo2():
    """glibc's allocator totals over all arenas, or None off glibc (before 2.33, or musl)."""
    try:
        call = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    call.restype = _MallInfo2
    return call


def _phase(frame) -> str:
    """The outermost call on the stack that names a phase."""
    stack = []
    while frame is not None:
        stack.append(frame)
        frame = frame.f_back
    for frame in reversed(stack):
        code = frame.f_code
        if "/strategies/" in code.co_filename and code.co_name in ("retrain", "grow"):
            if code.co_name == "grow":
                return "grow tables"  # rows for the period's new users and items
            owner = frame.f_locals.get("self")
            return f"retrain {getattr(owner, 'name', Path(code.co_filename).stem)}"
        phase = PHASES.get((Path(code.co_filename).name, code.co_name))
        if phase:
            return phase
    return "other"


class Sampler(threading.Thread):
    """Samples the main thread: seconds, resident, heap and mmapped MiB, phase."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.rows: list[tuple[float, float, float, float, str]] = []
        self._main = threading.main_thread().ident
        self._mallinfo = _mallinfo2()
        self._done = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self._done.wait(INTERVAL_S):
            info = self._mallinfo() if self._mallinfo else None
            heap, mmapped = (info.arena / MIB, info.hblkhd / MIB) if info else (float("nan"), float("nan"))
            frame = sys._current_frames().get(self._main)
            self.rows.append((time.perf_counter() - start, resident_bytes() / MIB, heap, mmapped, _phase(frame)))

    def stop(self) -> pd.DataFrame:
        self._done.set()
        self.join()
        return pd.DataFrame(self.rows, columns=["seconds", "resident_mib", "heap_mib", "mmapped_mib", "phase"])


def copy_run(source: Path, target: Path, period: int) -> None:
    """target: source resumable from checkpoint `period`; that checkpoint linked, the rest copied."""
    checkpoint = source / "checkpoints" / f"ckpt-{period:06d}.pt"
    if not checkpoint.exists():
        kept = sorted(p.name for p in (source / "checkpoints").glob("ckpt-*.pt"))
        raise SystemExit(f"{checkpoint} does not exist; this run keeps {', '.join(kept) or 'no checkpoints'}")
    if target.exists():
        raise SystemExit(f"{target} exists: give an --out folder of its own")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", "ranks"))
    (target / "checkpoints").mkdir()
    try:
        os.link(checkpoint, target / "checkpoints" / checkpoint.name)  # GBs: linked, never written
    except OSError:  # another file system: copied
        shutil.copy2(checkpoint, target / "checkpoints" / checkpoint.name)
    for name in (checkpoint.with_suffix(".sha256").name, "base_model.pt"):
        if (source / "checkpoints" / name).exists():
            shutil.copy2(source / "checkpoints" / name, target / "checkpoints" / name)
    (target / "checkpoints" / "latest").write_text(checkpoint.name)
    (target / "ranks").mkdir()
    for ranks in (source / "ranks").glob("period-*.npz"):  # the report's intervals read the earlier periods
        if int(ranks.stem.split("-")[1]) <= period:
            shutil.copy2(ranks, target / "ranks" / ranks.name)


def phase_table(timeline: pd.DataFrame) -> pd.DataFrame:
    steps = timeline["seconds"].diff().fillna(INTERVAL_S)
    table = (
        timeline.assign(step=steps)
        .groupby("phase")
        .agg(
            seconds=("step", "sum"),
            peak_resident_mib=("resident_mib", "max"),
            peak_mmapped_mib=("mmapped_mib", "max"),
        )
    )
    return table.sort_values("peak_resident_mib", ascending=False).round(0)


def plot(timelines: list[pd.DataFrame], labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for timeline, label, color in zip(timelines, labels, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        ax.plot(timeline["seconds"], timeline["resident_mib"] / 1024, color=color, label=f"{label}: resident")
        ax.plot(
            timeline["seconds"], timeline["mmapped_mib"] / 1024, color=color, ls=":", label=f"{label}: mmapped (tables)"
        )
        peak = timeline.loc[timeline["resident_mib"].idxmax()]
        ax.annotate(
            f"{peak['resident_mib']:,.0f} MiB\n{peak['phase']}",
            (peak["seconds"], peak["resident_mib"] / 1024),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
            color=color,
        )
    ax.set_xlabel("seconds since the resumed learner started")
    ax.set_ylabel("GiB")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    run_dir = out / "run"
    copy_run(Path(args.run_dir), run_dir, args.from_period)
    command = ["run", "--resume", str(run_dir), "--no-progress", "--metrics-port", "0", "--control-port", "0"]
    command += ["--set", "serve.producer_metrics_port=0", "--set", "serve.producer_control_port=0"]
    broker = None
    if args.kafka:
        broker = LocalKafka(run_dir / "kafka", port=free_port(), die_with_parent=True)
        command += ["--bus", f"kafka://{broker.up()}"]
    else:
        command += ["--bus", "memory"]
    sampler = Sampler()
    sampler.start()
    try:
        code = rtsim(command)
    finally:
        timeline = sampler.stop()
        if broker is not None:
            broker.down()
    timeline.to_csv(out / "timeline.tsv", sep="\t", index=False)
    plot([timeline], [f"from period {args.from_period}"], out / "memory.png")
    print(f"\npeak resident memory {timeline['resident_mib'].max():,.0f} MiB; by phase:")
    print(phase_table(timeline).to_string())
    print(f"\n{out / 'timeline.tsv'}, {out / 'memory.png'}")
    if code:
        raise SystemExit(code)


def draw_timelines(args: argparse.Namespace) -> None:
    labels = args.labels or [Path(path).parent.name for path in args.timelines]
    plot([pd.read_csv(path, sep="\t") for path in args.timelines], labels, Path(args.output))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    resume = commands.add_parser("run", help="resume a copy of a run directory, sampled")
    resume.add_argument("run_dir", help="a run directory with checkpoints (rtsim run or bench_replay.py)")
    resume.add_argument("--from-period", type=int, required=True, help="the checkpoint to resume from")
    resume.add_argument("--kafka", action="store_true", help="through a broker over the copy's Kafka state")
    resume.add_argument("--out", required=True, help="a new folder: the copy, timeline.tsv, memory.png")
    resume.set_defaults(func=run)
    draw = commands.add_parser("plot", help="several timelines on one figure")
    draw.add_argument("timelines", nargs="+", help="timeline.tsv files")
    draw.add_argument("--labels", nargs="+", help="one per timeline (default: the file's folder)")
    draw.add_argument("-o", "--output", required=True)
    draw.set_defaults(func=draw_timelines)
    args = parser.parse_args()
    if args.command == "plot" and args.labels and len(args.labels) != len(args.timelines):
        parser.error(f"{len(args.timelines)} timelines but {len(args.labels)} labels")
    args.func(args)


if __name__ == "__main__":
    main()
