"""`rtsim report`: report.md, report.html and plots from a synthetic run directory."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from learner.results import columns, pooled
from simulator.report import ReportError, _segment_pooled, load_run, write_report

PLOTS = ("ndcg.png", "recall.png", "retrain_seconds.png", "quality_cost.png", "segments.png")
PER_PERIOD = PLOTS[:3]
# the tiny preset's schedule: pretrain 0-1 (never evaluated, so absent from periods.csv)
PHASES = {2: "online", 3: "online", 4: "online", 5: "validation", 6: "test", 7: "test"}
STRATEGIES = ("sml", "fine_tune", "frozen", "my_strategy")
CONFIG = "preset: tiny\ndata:\n  periods: 8\n  phases: {pretrain: 2, online: 3, validation: 1, test: 2}\n"


def synthetic_rows(periods: dict[int, str] = PHASES) -> pd.DataFrame:
    """Distinct, deterministic values per (period, strategy); sml serves until fine_tune takes over in 6."""
    rng = np.random.default_rng(0)
    rows = []
    for t, phase in periods.items():
        for j, strategy in enumerate(STRATEGIES):
            row = {
                "period": t,
                "phase": phase,
                "strategy": strategy,
                "serving": int(strategy == ("sml" if t < 6 else "fine_tune")),
                "n_interactions": 100 * t,
                "n_new_users": 5,
                "n_new_items": 2,
                "n_candidates": 120.0,
            }
            row.update({c: float(rng.uniform(0.05, 0.5)) for c in columns() if "@" in c})
            row.update(retrain_seconds=0.0 if strategy == "frozen" else 0.05 * (j + 1) * t, eval_seconds=0.01)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=columns())
    frame.loc[frame["period"] == 6, "ndcg@20[NU-NI]"] = np.nan  # no new user met a new item in 6
    frame.loc[frame["period"] == 3, "ndcg@20[OU-NI]"] = np.nan
    return frame


def make_run(root: Path, frame: pd.DataFrame, name: str = "tiny-20261127T101500-a1b2c3") -> Path:
    run_dir = root / name
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(CONFIG)
    frame.to_csv(run_dir / "periods.csv", index=False)
    return run_dir


def assert_image(path: Path) -> None:
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 300, (path.name, image.shape)
    assert image.std() > 0.05, f"{path.name} looks blank"


def rtsim(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simulator.cli", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_complete_run_gets_tables_every_plot_and_a_self_contained_html(tmp_path):
    run_dir = make_run(tmp_path, synthetic_rows())
    written = write_report(run_dir)

    assert set(written) == {"report.md", "report.html"} | {f"plots/{p}" for p in PLOTS}
    for name, path in written.items():
        assert path == run_dir / name and path.is_file()
    for plot in PLOTS:
        assert_image(run_dir / "plots" / plot)
    markdown = (run_dir / "report.md").read_text()
    assert "tiny-20261127T101500-a1b2c3" in markdown and "preset: `tiny`" in markdown
    assert "Table 1: next-period quality, pooled over test interactions" in markdown
    assert "Table 2: retraining seconds per test period" in markdown
    assert "| my_strategy |" in markdown
    assert "serving: `sml` (2–5), `fine_tune` (6–7)" in markdown
    assert "## Notes" not in markdown  # nothing was missing
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(PLOTS)
    assert "<table>" in page and "<h1>" in page
    for plot in PLOTS:
        assert f"](plots/{plot})" in markdown
        assert f'href="plots/{plot}"' in page


def test_the_ablation_table_appears_with_sml_and_a_variant_only(tmp_path):
    frame = synthetic_rows().replace({"strategy": {"frozen": "sml_n", "my_strategy": "sml_fp"}})
    markdown = write_report(make_run(tmp_path, frame))["report.md"].read_text()
    assert "### Ablations: SML's variants, pooled over test interactions" in markdown
    table = pooled(frame)
    section = markdown.split("### Ablations")[1].split("###")[0]
    rows = [line for line in section.splitlines() if line.startswith("| sml")]
    assert [r.split("|")[1].strip() for r in rows] == ["sml", "sml_n", "sml_fp"]
    cells = []
    for metric in ("ndcg@20", "recall@20"):
        value = table.at["sml_fp", metric]
        cells += [f"{value:.4f}", f"{100 * (1 - value / table.at['sml', metric]):.1f}%"]
    assert rows[-1] == "| sml_fp | " + " | ".join(cells) + " |"
    assert "fine_tune" not in section
    assert "sml_n: transfer trained on the task's own period" in section and "sml_cnn:" not in section
    plain = write_report(make_run(tmp_path, synthetic_rows(), name="plain"))["report.md"]
    assert "Ablations" not in plain.read_text()


def test_segments_pool_only_non_empty_periods_weighted_by_interactions(tmp_path):
    frame = synthetic_rows()
    table = _segment_pooled(load_run(make_run(tmp_path, frame)))
    test = frame[(frame["phase"] == "test") & (frame["strategy"] == "sml")].set_index("period")
    n = test["n_interactions"]
    expected = (test.at[6, "ndcg@20[OU-OI]"] * n[6] + test.at[7, "ndcg@20[OU-OI]"] * n[7]) / (n[6] + n[7])
    assert math.isclose(table.at["sml", "OU-OI"], expected)
    assert math.isclose(table.at["sml", "NU-NI"], test.at[7, "ndcg@20[NU-NI]"])  # period 6 was empty


def test_cli_writes_the_report(tmp_path):
    run_dir = make_run(tmp_path, synthetic_rows())
    done = rtsim("report", run_dir)
    assert done.returncode == 0, done.stderr
    assert str(run_dir / "report.md") in done.stdout and "5 in" in done.stdout
    for plot in PLOTS:
        assert_image(run_dir / "plots" / plot)


def test_run_still_going_reports_what_has_closed(tmp_path):
    run_dir = make_run(tmp_path, synthetic_rows({2: "online", 3: "online", 4: "online"}))
    notes: list[str] = []
    written = write_report(run_dir, note=notes.append)

    assert set(written) == {"report.md", "report.html"} | {f"plots/{p}" for p in PER_PERIOD}
    for plot in PER_PERIOD:
        assert_image(run_dir / "plots" / plot)
    markdown = (run_dir / "report.md").read_text()
    assert "still running: 3 periods closed of 8 scheduled (last: 4, online); no test period yet" in markdown
    assert "No test period has closed yet." in markdown
    assert any("once a test period has closed" in n for n in notes)
    assert not (run_dir / "plots" / "segments.png").exists()


def test_run_with_no_closed_period_yet(tmp_path):
    run_dir = make_run(tmp_path, synthetic_rows({}))
    written = write_report(run_dir)
    assert set(written) == {"report.md", "report.html"}
    assert "no period has closed yet" in (run_dir / "report.md").read_text()


def test_missing_columns_skip_what_needs_them_and_say_so(tmp_path):
    frame = synthetic_rows().drop(columns=["ndcg@20[NU-OI]", "serving"])
    run_dir = make_run(tmp_path, frame)
    written = write_report(run_dir)

    assert "plots/segments.png" not in written and "plots/ndcg.png" in written
    markdown = (run_dir / "report.md").read_text()
    assert "skipped: periods.csv has no column `ndcg@20[NU-OI]`" in markdown
    assert "no `serving` column" in markdown
    assert "Table 1" in markdown  # the tables do not need the dropped columns


def test_missing_periods_csv_is_one_line_and_exit_code_2(tmp_path):
    with pytest.raises(ReportError, match="no periods.csv"):
        write_report(tmp_path)
    done = rtsim("report", tmp_path / "nowhere")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no periods.csv" in done.stderr
    assert not (tmp_path / "nowhere").exists()


def test_help_has_an_example():
    done = rtsim("report", "--help")
    assert done.returncode == 0
    assert "example:\n  rtsim report runs/" in done.stdout
