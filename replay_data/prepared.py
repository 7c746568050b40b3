"""Prepared event logs: read -> preprocess -> sort -> cut into periods -> code -> cache.

A prepared log is a folder holding `events.parquet` (ts int64, user and item int32 codes,
sorted by (ts, raw user, raw item)), `users.parquet` and `items.parquet` (code -> raw id,
codes in first-appearance order) and `manifest.json` (source, options, checksums, counts
before and after every step, the schedule's edges and the phases). Preparing the same
input with the same options again returns the cached folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from replay_data import readers, synthetic
from replay_data.preprocess import apply_steps
from replay_data.presets import DataConfig, default_phases
from replay_data.rejects import InputError, MissingInputError, Rejects
from replay_data.schedules import (
    BULK_RULE,
    SCHEDULE_VERSION,
    Schedule,
    build_schedule,
    bulk,
    empty_periods,
    period_counts,
)
from replay_data.typed_config import ConfigError, to_dict

FORMAT = 1


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rtsim" / "prepared"


@dataclass
class PreparedLog:
    path: Path
    ts: np.ndarray
    users: np.ndarray
    items: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    manifest: dict

    @property
    def schedule(self) -> Schedule:
        return Schedule.from_dict(self.manifest["schedule"])

    @property
    def phases(self) -> list[str]:
        return list(self.manifest["phases"])

    def period_bounds(self) -> np.ndarray:
        """Row offsets of the period edges: period t is rows [b[t], b[t+1])."""
        return np.searchsorted(self.ts, self.schedule.edges, side="left")

    def frame(self, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        """Rows lo..hi with raw string ids, as the wire carries them."""
        sl = slice(lo, hi)
        return pd.DataFrame(
            {
                "ts": self.ts[sl],
                "user": self.user_ids[self.users[sl]],
                "item": self.item_ids[self.items[sl]],
            }
        )


def cache_key(data: DataConfig) -> str:
    """Identity of a preparation: options, the input's path, size and mtime, and the
    schedule algorithm's version (a log cut by an older one is prepared again)."""
    source = None
    if data.input is not None:
        path = Path(data.input).resolve()
        source = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in _source_files(path)]
    blob = json.dumps(
        {
            "format": FORMAT,
            "schedule_version": SCHEDULE_VERSION,
            "data": to_dict(data) | {"input": None},
            "source": source,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


MAX_REJECTED = 0.2  # above this share of bad records, the input is more likely wrong than dirty


def prepare(
    data: DataConfig,
    cache_root: Path | None = None,
    *,
    progress: bool = True,
    force: bool = False,
    allow_rejects: bool = False,
) -> tuple[PreparedLog, bool]:
    """Prepare (or find in the cache) the log `data` describes; returns (log, was_cached).

    Fails when over MAX_REJECTED of the records are malformed or time outliers, unless
    `allow_rejects`."""
    root = Path(cache_root or default_cache_root())
    target = root / f"{data.dataset}-{cache_key(data)}"
    if (target / "manifest.json").exists() and not force:
        return load(target), True
    started = time.time()
    rejects = Rejects(strict=data.strict)
    frame = _read(data, rejects, progress)
    counts: dict = {"read": len(frame)}
    frame, steps = apply_steps(frame, data.preprocess)
    frame = frame.sort_values(["ts", "user", "item"], kind="mergesort", ignore_index=True)
    if len(frame) == 0:
        raise ConfigError(
            f"no events left from {data.input or data.dataset} after reading and preprocessing; "
            f"rejected: {rejects.as_dict()['counts']}, steps: {steps}"
        )
    n_sorted = len(frame)
    frame, span = _drop_time_outliers(frame, rejects)
    counts["time_outliers"] = n_sorted - len(frame)
    _check_rejected(rejects, counts["read"] - counts["time_outliers"], allow_rejects)
    schedule = _schedule(data, frame["ts"].to_numpy(np.int64))
    inside = (frame["ts"] >= schedule.edges[0]) & (frame["ts"] < schedule.edges[-1])
    counts["outside_schedule"] = int((~inside).sum())
    frame = frame[inside].reset_index(drop=True)
    user_codes, user_ids = pd.factorize(frame["user"], sort=False)
    item_codes, item_ids = pd.factorize(frame["item"], sort=False)
    ts = frame["ts"].to_numpy(np.int64)
    per_period = period_counts(ts, schedule.edges)
    phases = data.phases or default_phases(schedule.n_periods)
    counts.update(
        events=len(frame),
        users=len(user_ids),
        items=len(item_ids),
        period_counts=per_period.tolist(),
        empty_periods=empty_periods(per_period),
    )
    manifest = {
        "format": FORMAT,
        "schedule_version": SCHEDULE_VERSION,
        "dataset": data.dataset,
        "source": _describe_source(data),
        "options": to_dict(data),
        "rejected": rejects.as_dict(),
        "preprocess": steps,
        "counts": counts,
        "schedule": schedule.to_dict(),
        "bulk": {"first": span[0], "last": span[1], "rule": BULK_RULE},
        "phases": phases.labels(),
        "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prepare_seconds": round(time.time() - started, 2),
    }
    _write(target, ts, user_codes, item_codes, user_ids, item_ids, manifest)
    return load(target), False


def load(path: str | Path) -> PreparedLog:
    path = Path(path)
    if not (path / "manifest.json").exists():
        raise MissingInputError(f"{path} is not a prepared log (no manifest.json); run `rtsim prepare` first")
    manifest = json.loads((path / "manifest.json").read_text())
    version = manifest.get("schedule_version", 1)  # 1: written before the version was recorded
    if version != SCHEDULE_VERSION:
        raise InputError(
            f"{path} was cut into periods by schedule algorithm {version}, this rtsim uses {SCHEDULE_VERSION}: "
            "prepare it again (`rtsim prepare DATASET --force`)"
        )
    events = pq.read_table(path / "events.parquet")
    return PreparedLog(
        path=path,
        ts=events.column("ts").to_numpy(),
        users=events.column("user").to_numpy(),
        items=events.column("item").to_numpy(),
        user_ids=pq.read_table(path / "users.parquet").column("id").to_numpy(zero_copy_only=False),
        item_ids=pq.read_table(path / "items.parquet").column("id").to_numpy(zero_copy_only=False),
        manifest=manifest,
    )


def list_prepared(cache_root: Path | None = None) -> list[dict]:
    root = Path(cache_root or default_cache_root())
    out = []
    for manifest_path in sorted(root.glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        out.append(
            {
                "path": str(manifest_path.parent),
                "dataset": manifest["dataset"],
                "events": manifest["counts"]["events"],
                "users": manifest["counts"]["users"],
                "items": manifest["counts"]["items"],
                "periods": len(manifest["phases"]),
                "prepared_at": manifest["prepared_at"],
            }
        )
    return out


def _read(data: DataConfig, rejects: Rejects, progress: bool) -> pd.DataFrame:
    if data.dataset in synthetic.PRESETS or data.dataset.startswith("synthetic"):
        options = dict(data.reader)
        world = options.pop("world", data.dataset)
        seed = options.pop("seed", 0)
        chunks = synthetic.read_synthetic(world, seed, rejects, progress=progress, **options)
    else:
        if data.input is None:
            raise ConfigError(f"dataset {data.dataset!r} reads a file: give --input PATH")
        chunks = readers.read(data.dataset, data.input, rejects, progress=progress, **data.reader)
    frames = [chunk[["ts", "user", "item"] + (["event_id"] if "event_id" in chunk else [])] for chunk in chunks]
    if not frames:
        return pd.DataFrame({"ts": np.zeros(0, np.int64), "user": [], "item": []})
    return pd.concat(frames, ignore_index=True)


def _drop_time_outliers(frame: pd.DataFrame, rejects: Rejects) -> tuple[pd.DataFrame, tuple[int, int]]:
    """Events far from the bulk of the log (schedules.BULK_RULE) are rejected as time_outlier."""
    ts = frame["ts"].to_numpy(np.int64)
    first, last = bulk(ts)
    normal = (ts >= first) & (ts <= last)
    for t in ts[~normal]:
        rejects.reject("time_outlier", f"ts {t}", f"outside {first}..{last}, the bulk of the log widened by its length")
    return frame[normal].reset_index(drop=True), (first, last)


def _check_rejected(rejects: Rejects, kept: int, allow_rejects: bool) -> None:
    bad = rejects.malformed
    if allow_rejects or bad <= MAX_REJECTED * (kept + bad):
        return
    raise ConfigError(
        f"{bad:,} of {kept + bad:,} records were rejected ({dict(rejects.counts)}; e.g. "
        f"{'; '.join(rejects.examples[:2])}): check the input, or pass --allow-rejects "
        f"to prepare it anyway"
    )


def _schedule(data: DataConfig, ts: np.ndarray) -> Schedule:
    schedule = build_schedule(data.schedule.kind, ts, **data.schedule.params)
    # phases without periods fix T too: every period needs exactly one phase label
    needed = data.periods if data.periods is not None else data.phases.total if data.phases else None
    if needed is None:
        return schedule
    if schedule.n_periods < needed:
        raise ConfigError(
            f"the {schedule.kind} schedule yields {schedule.n_periods} periods but {needed} are needed; "
            f"use a longer log or set data.periods (and data.phases) to at most {schedule.n_periods}"
        )
    return Schedule(kind=schedule.kind, params=schedule.params, edges=schedule.edges[: needed + 1])


def _source_files(path: Path) -> list[Path]:
    if not path.exists():
        raise MissingInputError(f"input {path} does not exist")
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _describe_source(data: DataConfig) -> dict:
    if data.input is None:
        return {"kind": "synthetic", "reader": dict(data.reader)}
    files = []
    for file in _source_files(Path(data.input).resolve()):
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        files.append({"path": str(file), "bytes": file.stat().st_size, "sha256": digest.hexdigest()})
    return {"kind": "file", "input": str(Path(data.input).resolve()), "files": files}


def _write(target: Path, ts, user_codes, item_codes, user_ids, item_ids, manifest: dict) -> None:
    """Write into a temporary sibling, then rename: a crash never leaves a half log."""
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        pq.write_table(
            pa.table({"ts": ts, "user": user_codes.astype(np.int32), "item": item_codes.astype(np.int32)}),
            tmp / "events.parquet",
        )
        pq.write_table(pa.table({"id": pa.array(list(map(str, user_ids)), pa.string())}), tmp / "users.parquet")
        pq.write_table(pa.table({"id": pa.array(list(map(str, item_ids)), pa.string())}), tmp / "items.parquet")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk keeps no half-written log
        raise
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
