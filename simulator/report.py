"""`rtsim report RUN_DIR`: report.md, report.html and plots/*.png from a run directory.

Everything is read from periods.csv and config.yaml, so a report can be written while the run
is still going. pandas, matplotlib and learner.results (which pulls in torch) are imported
inside the functions that use them: the CLI registers this command for every `rtsim`
invocation, and those must not pay seconds of imports for it.
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PHASES = ("pretrain", "online", "validation", "test")
# Light fills so that the strategy lines stay the strongest ink on the page.
PHASE_FILL = {"pretrain": "#e6e6e6", "online": "#dceaf7", "validation": "#fbefc4", "test": "#d9efd9"}
# Fixed colours for the registered strategies, so every plot of every run agrees; strategies
# outside this list take the spare colours in order of first appearance.
STRATEGY_COLOURS = {
    "sml": "tab:blue",
    "sml_s": "tab:purple",
    "fine_tune": "tab:orange",
    "full_retrain": "tab:green",
    "spmf": "tab:red",
    "frozen": "tab:gray",
    "gru4rec": "tab:brown",
    "caser": "tab:pink",
    # SML's ablations: outside the spare colours, so strategies added later never share theirs
    "sml_cnn": "navy",
    "sml_fc": "teal",
    "sml_n": "goldenrod",
    "sml_fp": "magenta",
}
SPARE_COLOURS = ("tab:olive", "tab:cyan", "black", "gold", "darkred")
SEGMENT_NAMES = {
    "OU-OI": "old user, old item",
    "OU-NI": "old user, new item",
    "NU-OI": "new user, old item",
    "NU-NI": "new user, new item",
}
REQUIRED = ("period", "phase", "strategy")
FIGSIZE = (10.0, 5.2)
DPI = 110


class ReportError(ValueError):
    """The run directory cannot be reported on; the message is the one line the user sees."""


@dataclass
class Run:
    path: Path
    run_id: str
    preset: str
    frame: pd.DataFrame
    schedule: list[str]  # phase of periods 0..T-1 from config.yaml; empty when unknown
    k: int  # the largest K with NDCG@K and Recall@K columns: what the plots show
    ks: tuple[int, ...]
    notes: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # a seed sweep's seeds (frame has a `seed` column)

    @property
    def strategies(self) -> list[str]:
        return list(self.frame["strategy"].drop_duplicates())

    @property
    def test(self) -> pd.DataFrame:
        return self.frame[self.frame["phase"] == "test"]

    def colour(self, strategy: str) -> str:
        if strategy in STRATEGY_COLOURS:
            return STRATEGY_COLOURS[strategy]
        others = [s for s in self.strategies if s not in STRATEGY_COLOURS]
        return SPARE_COLOURS[others.index(strategy) % len(SPARE_COLOURS)]


@dataclass(frozen=True)
class Plot:
    file: str
    title: str
    caption: str  # one line: what to look for
    columns: Callable[[Run], tuple[str, ...]]
    draw: Callable[[Figure, Run], None]
    test_only: bool = False


def write_report(run_dir: Path, note: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Write report.md, report.html and plots/*.png into run_dir.

    Returns the files written, keyed by their path relative to run_dir. Problems that still
    leave a useful report (a run without test periods yet, missing columns) become notes in
    report.md and are passed to `note`; a directory without a readable periods.csv raises
    ReportError.
    """
    run = load_run(Path(run_dir))
    written: dict[str, Path] = {}
    plots_dir = run.path / "plots"
    shown: list[Plot] = []
    if run.frame.empty:
        run.notes.append("No period has closed yet: periods.csv has a header only, so there is nothing to plot.")
    else:
        plots_dir.mkdir(exist_ok=True)
        for plot in _plots(run.k):
            missing = [c for c in plot.columns(run) if c not in run.frame.columns]
            if missing:
                run.notes.append(
                    f"{plot.title} skipped: periods.csv has no column {', '.join(f'`{c}`' for c in missing)}."
                )
            elif plot.test_only and run.test.empty:
                run.notes.append(f"{plot.title} appears once a test period has closed.")
            else:
                written[f"plots/{plot.file}"] = _save(plot, run, plots_dir / plot.file)
                shown.append(plot)
    markdown = _markdown(run, _tables(run), shown)
    written["report.md"] = run.path / "report.md"
    written["report.md"].write_text(markdown)
    written["report.html"] = run.path / "report.html"
    written["report.html"].write_text(_html(markdown, run.path, f"rtsim report: {run.run_id}"))
    if note:
        for line in run.notes:
            note(line)
    return written


def load_run(run_dir: Path) -> Run:
    csv_path = run_dir / "periods.csv"
    from simulator.seeds import is_sweep

    if is_sweep(run_dir):
        return _load_sweep(run_dir)
    if not csv_path.is_file():
        raise ReportError(
            f"{run_dir} has no periods.csv: not a run directory (runs/<run-id>/), or its run has not started"
        )
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ReportError(f"{csv_path} is not a readable CSV: {str(err).splitlines()[0]}") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ReportError(
            f"{csv_path} lacks the column(s) {', '.join(missing)}; a periods.csv starts with {', '.join(REQUIRED)}, ..."
        )
    notes: list[str] = []
    duplicated = frame.duplicated(["period", "strategy"], keep="last")
    if duplicated.any():  # a period recorded twice (e.g. replayed after a restart): the newest row wins
        notes.append(
            f"{int(duplicated.sum())} repeated (period, strategy) rows in periods.csv: the last of each is used."
        )
        frame = frame[~duplicated].reset_index(drop=True)
    ks = tuple(
        sorted(
            int(m.group(1))
            for c in frame.columns
            if (m := re.fullmatch(r"ndcg@(\d+)", c)) and f"recall@{m.group(1)}" in frame.columns
        )
    )
    if "serving" not in frame.columns:
        notes.append("periods.csv has no `serving` column: the serving strategy is not marked.")
    preset, schedule = _read_config(run_dir / "config.yaml", notes)
    return Run(
        path=run_dir,
        run_id=run_dir.resolve().name,
        preset=preset,
        frame=frame,
        schedule=schedule,
        k=max(ks, default=20),
        ks=ks,
        notes=notes,
    )


def _load_sweep(run_dir: Path) -> Run:
    """A seed sweep (RUN_DIR/seed-<s>/): every seed's rows in one frame, with a `seed` column."""
    import pandas as pd

    from simulator.seeds import seed_dirs

    frames = []
    for seed, path in seed_dirs(run_dir).items():
        one = load_run(path)
        frames.append(one.frame.assign(seed=seed))
    frame = pd.concat(frames, ignore_index=True)
    notes: list[str] = []
    preset, schedule = _read_config(run_dir / "config.yaml", notes)
    return Run(
        path=run_dir,
        run_id=run_dir.resolve().name,
        preset=preset,
        frame=frame,
        schedule=schedule,
        k=one.k,
        ks=one.ks,
        notes=notes,
        seeds=sorted(seed_dirs(run_dir)),
    )


def _read_config(path: Path, notes: list[str]) -> tuple[str, list[str]]:
    """The preset and the phase of every scheduled period, so bands cover periods not evaluated
    (pretrain) or not closed yet."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        notes.append(
            f"config.yaml unreadable ({type(err).__name__}): preset unknown; phase bands cover evaluated periods only."
        )
        return "unknown", []
    counts = (config.get("data") or {}).get("phases") or {}
    schedule = [phase for phase in PHASES for _ in range(int(counts.get(phase) or 0))]
    return str(config.get("preset", "unknown")), schedule


def _tables(run: Run) -> str:
    from learner.results import summary_markdown

    needed = ["n_interactions", "retrain_seconds"] + [f"{m}@{k}" for k in run.ks for m in ("recall", "ndcg")]
    missing = [c for c in needed if c not in run.frame.columns]
    if not run.ks or missing:
        run.notes.append(
            f"Summary tables skipped: periods.csv has no column {', '.join(f'`{c}`' for c in missing or ['ndcg@K'])}."
        )
        return ""
    if run.frame.empty:
        return ""
    if run.seeds:
        from simulator.seeds import sweep_summary

        text = sweep_summary(run.path, title="Summary tables", ks=run.ks)
    else:
        text = summary_markdown(run.frame, "Summary tables", run.ks)
    # one level down: the tables are a section of the report, not its title
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


# ---------------------------------------------------------------- plots


def _plots(k: int) -> list[Plot]:
    return [
        Plot(
            "ndcg.png",
            f"NDCG@{k} per period",
            "Which strategy stays on top through the test band, and how fast each recovers after a dip; "
            "circles mark the strategy that was serving.",
            lambda run: (f"ndcg@{run.k}",),
            lambda fig, run: _per_period(fig, run, f"ndcg@{run.k}", f"NDCG@{run.k} (0–1, higher is better)"),
        ),
        Plot(
            "recall.png",
            f"Recall@{k} per period",
            "Whether the recall ranking agrees with the NDCG ranking (a disagreement means hits are found "
            "but ranked low).",
            lambda run: (f"recall@{run.k}",),
            lambda fig, run: _per_period(fig, run, f"recall@{run.k}", f"Recall@{run.k} (0–1, higher is better)"),
        ),
        Plot(
            "retrain_seconds.png",
            "Retrain seconds per period",
            "The cost gap between strategies (log scale: one grid line is 10x) and whether any strategy's "
            "cost grows as data accumulates.",
            lambda run: ("retrain_seconds",),
            lambda fig, run: _per_period(
                fig, run, "retrain_seconds", "retrain time per period (s, log scale)", log=True
            ),
        ),
        Plot(
            "quality_cost.png",
            "Quality vs retraining cost on the test periods",
            "Up and to the left is better: the strategies on the frontier give the most NDCG per second of training.",
            lambda run: ("n_interactions", "retrain_seconds", f"ndcg@{run.k}"),
            _quality_cost,
            test_only=True,
        ),
        Plot(
            "segments.png",
            f"Test NDCG@{k} per user/item segment",
            "Where a strategy wins or loses: old vs new users (OU/NU) and old vs new items (OI/NI).",
            lambda run: ("n_interactions",) + tuple(f"ndcg@{run.k}[{s}]" for s in SEGMENT_NAMES),
            _segments,
            test_only=True,
        ),
    ]


def _save(plot: Plot, run: Run, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state
    plot.draw(fig, run)
    status = "" if not run.test.empty else " (run in progress: no test period yet)"
    # over the axes, not the figure: a figure title would run under the legend on the right
    fig.axes[0].set_title(f"{plot.title}{status}\n{run.run_id}", fontsize=12, pad=12)
    fig.savefig(path)
    return path


def _footnote(fig: Figure, text: str) -> None:
    fig.get_layout_engine().set(rect=(0, 0.07, 1, 0.93))  # room below the axes for the note
    fig.text(0.01, 0.015, text, fontsize=8.5, style="italic", color="#333333", wrap=True)


def _per_period(fig: Figure, run: Run, column: str, ylabel: str, log: bool = False) -> None:
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    ax = fig.add_subplot()
    frame = run.frame
    if "n_interactions" in frame.columns and column != "retrain_seconds":
        frame = frame[frame["n_interactions"] > 0]  # a period without interactions has no quality to show
    periods = np.arange(int(run.frame["period"].min()), int(run.frame["period"].max()) + 1)
    floor = _log_floor(frame[column].to_numpy(float)) if log else None
    handles = []
    banded = len(run.seeds) > 1
    for strategy in run.strategies:
        mine = frame[frame["strategy"] == strategy]
        if banded:  # the mean line over seeds, and a band from the lowest to the highest seed
            spread = mine.groupby("period")[column].agg(["mean", "min", "max"]).reindex(periods)
            rows = mine[mine["seed"] == run.seeds[0]].set_index("period")
            values = spread["mean"].to_numpy(float)
            low, high = spread["min"].to_numpy(float), spread["max"].to_numpy(float)
            if floor is not None:
                low, high = np.maximum(low, floor), np.maximum(high, floor)
            ax.fill_between(periods, low, high, color=run.colour(strategy), alpha=0.22, linewidth=0)
        else:
            rows = mine.set_index("period")
            values = rows[column].reindex(periods).to_numpy(float)  # NaN where absent: the line breaks
        label = strategy
        if floor is not None and (values <= 0).any():
            values = np.where(values <= 0, floor, values)
            label += " (0 s drawn at the floor)"
        handles += ax.plot(periods, values, marker=".", linewidth=1.8, color=run.colour(strategy), label=label)
        if "serving" in rows.columns:
            served = rows.index[rows["serving"] == 1]
            ax.plot(
                served,
                values[np.searchsorted(periods, served)],
                linestyle="none",
                marker="o",
                markersize=10,
                markerfacecolor="none",
                markeredgecolor="black",
                markeredgewidth=1.3,
            )
    if "serving" in frame.columns:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markersize=10,
                markerfacecolor="none",
                markeredgecolor="black",
                label="serving in this period",
            )
        )
    if banded:
        from matplotlib.patches import Patch

        handles.append(Patch(color="gray", alpha=0.3, label=f"min–max over {len(run.seeds)} seeds (line: mean)"))
    if log:
        ax.set_yscale("log")
    _phase_bands(ax, run)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("period (index; evaluated on its interactions, then retrained)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", axis="y", alpha=0.4)
    fig.legend(handles=handles, loc="outside right upper", title="strategy", fontsize=9)


def _log_floor(values: np.ndarray) -> float:
    """Where non-positive seconds are drawn on a log axis: half the smallest positive value."""
    import numpy as np

    positive = values[np.isfinite(values) & (values > 0)]
    return float(positive.min()) / 2 if positive.size else 1e-3


def _phase_bands(ax: Axes, run: Run) -> None:
    """Shade each phase and name it on a top axis; config.yaml fills periods periods.csv lacks."""
    phase_of = dict(enumerate(run.schedule))
    phase_of.update(zip(run.frame["period"].astype(int), run.frame["phase"].astype(str)))
    spans: list[list] = []  # [phase, first, last]
    for period in sorted(phase_of):
        if spans and spans[-1][0] == phase_of[period] and spans[-1][2] == period - 1:
            spans[-1][2] = period
        else:
            spans.append([phase_of[period], period, period])
    for phase, first, last in spans:
        ax.axvspan(first - 0.5, last + 0.5, color=PHASE_FILL.get(phase, "#f2f2f2"), zorder=0, linewidth=0)
    ax.set_xlim(min(phase_of) - 0.5, max(phase_of) + 0.5)
    top = ax.secondary_xaxis("top")
    top.set_xticks(
        [(first + last) / 2 for _, first, last in spans],
        [_phase_label(phase, last - first + 1, len(phase_of)) for phase, first, last in spans],
    )
    top.tick_params(length=0, labelsize=9)


def _phase_label(phase: str, width: int, total: int) -> str:
    # a band narrower than ~8% of the axis has no room for "validation"
    return phase if width / max(total, 1) >= 0.08 or len(phase) <= 6 else phase[:3] + "."


def _quality_cost(fig: Figure, run: Run) -> None:
    from learner.results import pooled

    ax = fig.add_subplot()
    column = f"ndcg@{run.k}"
    test = run.test
    cost = test.groupby("strategy", sort=False)["retrain_seconds"].mean()
    quality = pooled(run.frame)[column]
    floor = _log_floor(cost.to_numpy(float))
    points = []
    for strategy in run.strategies:
        if strategy not in quality.index or strategy not in cost.index:
            continue
        seconds, ndcg = float(cost[strategy]), float(quality[strategy])
        x = seconds if seconds > 0 else floor
        ax.scatter(
            [x],
            [ndcg],
            s=90,
            color=run.colour(strategy),
            edgecolor="black",
            zorder=3,
            label=f"{strategy}: {ndcg:.4f} at {seconds:.2f} s",
        )
        points.append((strategy + (" (0 s, at the floor)" if seconds <= 0 else ""), x, ndcg))
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.2)
    _label_points(ax, points)
    ax.set_xlabel("mean retrain time per test period (s, log scale)")
    ax.set_ylabel(f"NDCG@{run.k} pooled over test interactions")
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside right upper", title=f"strategy: NDCG@{run.k} at cost", fontsize=9)
    periods = sorted(test["period"].unique())
    _footnote(
        fig,
        f"Test periods {periods[0]}–{periods[-1]}; NDCG pooled over their interactions (as in Table 1), "
        "cost is the mean of the per-period retrain seconds. Up and left is better.",
    )


def _label_points(ax: Axes, points: list[tuple[str, float, float]]) -> None:
    """Name each point at the first nearby spot whose label overlaps no label placed before it:
    strategies of similar cost and quality (fine_tune, sml_s) otherwise print over each other."""
    ax.figure.canvas.draw()  # fixes the limits, so data can be mapped to display points
    to_points = 72 / ax.figure.dpi
    placed: list[tuple[float, float, float, float]] = []  # label boxes in display points
    for name, x, y in points:
        px, py = (v * to_points for v in ax.transData.transform((x, y)))
        width, height = 5.4 * len(name) + 4, 12.0  # a 9-point label, roughly
        for dx, dy in ((7, 4), (7, -14), (-7, 4), (-7, -14), (7, 16), (7, -26), (-7, 16), (-7, -26)):
            left = px + dx if dx > 0 else px + dx - width
            box = (left, py + dy, left + width, py + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(
            name,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=9,
            ha="left" if dx > 0 else "right",
            va="bottom",
        )


def _segments(fig: Figure, run: Run) -> None:
    import numpy as np

    ax = fig.add_subplot()
    table = _segment_pooled(run)
    segments = list(SEGMENT_NAMES)
    strategies = [s for s in run.strategies if s in table.index]
    width = 0.8 / max(len(strategies), 1)
    x = np.arange(len(segments))
    for j, strategy in enumerate(strategies):
        values = table.loc[strategy, segments].to_numpy(float)
        bars = ax.bar(
            x - 0.4 + (j + 0.5) * width,
            np.nan_to_num(values),
            width,
            color=run.colour(strategy),
            label=strategy,
            edgecolor="white",
            linewidth=0.5,
        )
        ax.bar_label(
            bars, labels=["n/a" if np.isnan(v) else f"{v:.3f}" for v in values], fontsize=7, rotation=90, padding=2
        )
    ax.set_xticks(x, [f"{s}\n{SEGMENT_NAMES[s]}" for s in segments])
    ax.set_ylabel(f"NDCG@{run.k} pooled over test periods")
    ax.set_xlabel("segment (user / item old or new in the period)")
    ax.margins(y=0.18)
    ax.grid(True, axis="y", alpha=0.4)
    fig.legend(loc="outside right upper", title="strategy", fontsize=9)
    _footnote(
        fig,
        "Segment pooling weights each test period by its n_interactions (periods.csv does not record "
        "segment sizes) and skips periods where the segment was empty (NaN); n/a: empty in every test period.",
    )


def _segment_pooled(run: Run) -> pd.DataFrame:
    """Per strategy and segment: NDCG@K over the test periods where the segment had interactions."""
    import numpy as np
    import pandas as pd

    test = run.test[run.test["n_interactions"] > 0]
    out: dict[str, dict[str, float]] = {}
    for strategy, group in test.groupby("strategy", sort=False):
        weights = group["n_interactions"].to_numpy(float)
        out[strategy] = {}
        for segment in SEGMENT_NAMES:
            values = group[f"ndcg@{run.k}[{segment}]"].to_numpy(float)
            ok = ~np.isnan(values)
            out[strategy][segment] = float(np.average(values[ok], weights=weights[ok])) if ok.any() else float("nan")
    return pd.DataFrame.from_dict(out, orient="index")


# ---------------------------------------------------------------- report.md / report.html


def _markdown(run: Run, tables: str, plots: list[Plot]) -> str:
    frame = run.frame
    closed = sorted(frame["period"].unique())
    total = f" of {len(run.schedule)} scheduled" if run.schedule else ""
    if frame.empty:
        status = "no period has closed yet"
    elif run.test.empty:
        status = f"still running: {_periods(len(closed))} closed{total} (last: {closed[-1]}, {_phase_at(frame, closed[-1])}); no test period yet"
    elif run.schedule and closed[-1] < len(run.schedule) - 1:
        status = f"still running: {_periods(len(closed))} closed{total} (last: {closed[-1]}, test)"
    else:
        status = f"{_periods(len(closed))} evaluated ({closed[0]}–{closed[-1]})"
    lines = [
        f"# rtsim report: {run.run_id}",
        "",
        f"- run id: `{run.run_id}`",
        f"- preset: `{run.preset}`",
        f"- status: {status}",
        f"- strategies: {', '.join(f'`{s}`' for s in run.strategies) or 'none yet'}",
    ]
    if run.seeds:
        lines.append(f"- seeds: {', '.join(map(str, run.seeds))} (one run each in `seed-<s>/`)")
    if "serving" in frame.columns and not frame.empty:
        lines.append(f"- serving: {_serving_spans(frame)}")
    lines.append("")
    if run.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in run.notes] + [""]
    if tables:
        lines += [tables.strip(), ""]
    if plots:
        lines += [
            "## Plots",
            "",
            "Per-period plots shade the phases (pretrain, online, validation, test); "
            "a black circle marks the strategy serving in that period."
            + (
                f" Seed sweep: each line is the mean over the {len(run.seeds)} seeds and its band spans the "
                "lowest to the highest seed; the other plots pool every seed's rows."
                if len(run.seeds) > 1
                else ""
            ),
            "",
        ]
        for plot in plots:
            lines += [
                f"### {plot.title}",
                "",
                f"![{plot.title}](plots/{plot.file})",
                "",
                f"*Look for:* {plot.caption}",
                "",
            ]
    return "\n".join(lines)


def _periods(n: int) -> str:
    return f"{n} period" + ("" if n == 1 else "s")


def _phase_at(frame: pd.DataFrame, period: int) -> str:
    return str(frame.loc[frame["period"] == period, "phase"].iloc[0])


def _serving_spans(frame: pd.DataFrame) -> str:
    """`sml` (4–9), `fine_tune` (10–15): who served which periods, swaps included."""
    served = frame[frame["serving"] == 1].drop_duplicates(["period", "strategy"]).sort_values("period")
    spans: list[list] = []
    for period, strategy in zip(served["period"], served["strategy"]):
        if spans and spans[-1][0] == strategy and spans[-1][2] == period - 1:
            spans[-1][2] = period
        else:
            spans.append([strategy, period, period])
    text = ", ".join(f"`{s}` ({a}–{b})" if a != b else f"`{s}` ({a})" for s, a, b in spans)
    return text or "no row has serving = 1"


def _html(markdown: str, run_dir: Path, title: str) -> str:
    """The report.md subset this module writes (headings, lists, pipe tables, images, paragraphs)
    as one self-contained page: images are inlined and link to their PNG file."""
    body: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif heading := re.match(r"(#{1,6}) (.*)", line):
            level = len(heading.group(1))
            body.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
        elif image := re.fullmatch(r"!\[(.*)\]\((.*)\)", line):
            alt, src = image.groups()
            data = base64.b64encode((run_dir / src).read_bytes()).decode("ascii")
            body.append(
                f'<figure><a href="{html.escape(src)}"><img alt="{html.escape(alt)}" '
                f'src="data:image/png;base64,{data}"></a></figure>'
            )
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([cell.strip() for cell in lines[i].strip("|").split("|")])
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in block[0])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
        else:
            body.append(f"<p>{_inline(line)}</p>")
            i += 1
    return (
        textwrap.dedent(f"""\
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
        <style>
        body {{ font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #222; }}
        table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-variant-numeric: tabular-nums; }}
        th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
        th:first-child, td:first-child {{ text-align: left; }}
        img {{ max-width: 100%; border: 1px solid #ddd; }}
        figure {{ margin: 0.5em 0; }}
        code {{ background: #f3f3f3; padding: 0 0.2em; }}
        </style></head>
        <body>
        """)
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


# ---------------------------------------------------------------- CLI


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="write report.md, report.html and plots from a run directory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
        Read RUN_DIR/periods.csv and config.yaml and write RUN_DIR/report.md, a
        self-contained RUN_DIR/report.html, and RUN_DIR/plots/*.png: NDCG@20 and Recall@20
        per period, retrain seconds per period, quality vs cost, and NDCG@20 per old/new
        user x item segment, with the summary tables (Table 1, the ablation table when SML
        and one of its variants ran, and Table 2). Works on a run that is still going: it
        reports the periods closed so far.

        example:
          rtsim report runs/demo-20261127T101500-a1b2c3"""),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory, runs/<run-id>/")
    parser.set_defaults(func=_handle)
    return parser


def _handle(args: argparse.Namespace) -> int:
    try:
        written = write_report(args.run_dir, note=lambda line: print(f"rtsim report: note: {line}", file=sys.stderr))
    except ReportError as err:
        print(f"rtsim report: error: {err}", file=sys.stderr)
        return 2
    plots = [path for name, path in written.items() if name.startswith("plots/")]
    print(f"report: {written['report.md']}\nhtml:   {written['report.html']}")
    print(f"plots:  {len(plots)} in {args.run_dir / 'plots'}" if plots else "plots:  none yet")
    return 0
