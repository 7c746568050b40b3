"""Optional preprocessing of an interaction table, every step counted for the manifest.

Each step takes a DataFrame with columns ts (int64 unix seconds), user, item (str) and an
optional event_id (str), and returns the kept rows in their input order with a fresh
index. Given `records`, a step appends {"step": name, "before": rows in, "after": rows out,
**its params} so the manifest shows what every filter removed.

`apply_steps` runs the configured steps in the fixed order of `STEP_ORDER`:
time_window (later steps only see the kept span), dedup_exact (a logged event counted
once), repeat_policy (before k-core, so k-core counts distinct pairs unless keep="all"),
kcore (last: it depends on everything removed before it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from replay_data.typed_config import ConfigError

_KEY = ["ts", "user", "item"]
_KEEP = ("first", "last", "all")


def _check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in _KEY if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; need ts, user, item (event_id optional)")


def _int_or_none(name: str, value: Any, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _finish(df: pd.DataFrame, mask: np.ndarray, records: list[dict] | None, step: str, **extra: Any) -> pd.DataFrame:
    out = df[mask].reset_index(drop=True)
    if records is not None:
        records.append({"step": step, "before": len(df), "after": len(out), **extra})
    return out


def _codes(column: pd.Series) -> np.ndarray:
    # a missing id is its own value rather than a -1 sentinel that could collide in pair keys
    return pd.factorize(column, use_na_sentinel=False)[0].astype(np.int64)


def time_window(
    df: pd.DataFrame, start: int | None = None, end: int | None = None, *, records: list[dict] | None = None
) -> pd.DataFrame:
    """Keep start <= ts < end (unix seconds); None leaves that side open."""
    start = _int_or_none("time_window.start", start)
    end = _int_or_none("time_window.end", end)
    if start is not None and end is not None and start >= end:
        raise ConfigError(f"time_window.start ({start}) must be before time_window.end ({end})")
    _check_columns(df)
    ts = df["ts"].to_numpy()
    keep = np.ones(len(df), dtype=bool)
    if start is not None:
        keep &= ts >= start
    if end is not None:
        keep &= ts < end
    return _finish(df, keep, records, "time_window", start=start, end=end)


def dedup_exact(df: pd.DataFrame, *, records: list[dict] | None = None) -> pd.DataFrame:
    """Drop repeated logs of one event, keeping the first row.

    Rows with an event_id are duplicates when their event_id repeats; rows without one
    (no column, or NA; an empty string is an id) when (ts, user, item) repeats among such rows. A row
    with an id is never matched against one without: the id is the better identity.
    """
    _check_columns(df)
    n = len(df)
    has_id = df["event_id"].notna().to_numpy() if "event_id" in df.columns else np.zeros(n, dtype=bool)
    dup = np.zeros(n, dtype=bool)
    if has_id.any():
        dup[has_id] = df.loc[has_id, "event_id"].duplicated().to_numpy()
    if not has_id.all():
        dup[~has_id] = df.loc[~has_id, _KEY].duplicated().to_numpy()
    return _finish(
        df,
        ~dup,
        records,
        "dedup_exact",
        dropped_by_event_id=int(dup[has_id].sum()),
        dropped_by_key=int(dup[~has_id].sum()),
    )


def repeat_policy(df: pd.DataFrame, keep: str = "first", *, records: list[dict] | None = None) -> pd.DataFrame:
    """Handle repeated (user, item) pairs: keep the earliest, the latest, or all.

    "first"/"last" go by ts; equal timestamps are ordered by input position.
    """
    if keep not in _KEEP:
        raise ConfigError(f"repeat_policy.keep must be one of {list(_KEEP)}, got {keep!r}")
    _check_columns(df)
    if keep == "all":
        return _finish(df, np.ones(len(df), dtype=bool), records, "repeat_policy", keep=keep)
    items = _codes(df["item"])
    pairs = _codes(df["user"]) * (int(items.max(initial=-1)) + 1) + items
    order = np.argsort(df["ts"].to_numpy(), kind="stable")
    repeated = pd.Series(pairs[order]).duplicated(keep=keep).to_numpy()
    kept = np.empty(len(df), dtype=bool)
    kept[order] = ~repeated
    return _finish(df, kept, records, "repeat_policy", keep=keep)


def kcore(
    df: pd.DataFrame,
    *,
    min_user: int = 0,
    min_item: int = 0,
    iterate: bool = True,
    records: list[dict] | None = None,
) -> pd.DataFrame:
    """Drop users with < min_user rows and items with < min_item rows.

    Counts are rows (interactions), so run repeat_policy first to count distinct pairs.
    iterate=True repeats user-then-item passes until nothing changes: the result is the
    largest row set where every user and item meets its threshold. iterate=False is one
    pass, users then items, as several public pipelines do; items removed in it can leave
    users below min_user. A threshold of 0 or 1 disables that side.
    """
    min_user = _int_or_none("kcore.min_user", min_user, minimum=0)
    min_item = _int_or_none("kcore.min_item", min_item, minimum=0)
    if not isinstance(iterate, bool):
        raise ConfigError(f"kcore.iterate must be true or false, got {iterate!r}")
    _check_columns(df)
    sides = [(_codes(df[col]), k) for col, k in (("user", min_user), ("item", min_item)) if k > 1]
    alive = np.ones(len(df), dtype=bool)
    passes = 0
    changed = bool(sides)
    while changed:
        passes += 1
        changed = False
        for codes, k in sides:
            counts = np.bincount(codes[alive], minlength=int(codes.max(initial=-1)) + 1)
            drop = alive & (counts[codes] < k)
            if drop.any():
                alive &= ~drop
                changed = True
        if not iterate:
            break
    return _finish(df, alive, records, "kcore", min_user=min_user, min_item=min_item, iterate=iterate, passes=passes)


_STEPS: dict[str, Callable[..., pd.DataFrame]] = {
    "time_window": time_window,
    "dedup_exact": dedup_exact,
    "repeat_policy": repeat_policy,
    "kcore": kcore,
}
STEP_ORDER = tuple(_STEPS)


def _step_params(step: Callable[..., pd.DataFrame]) -> list[str]:
    return [p for p in inspect.signature(step).parameters if p not in ("df", "records")]


def apply_steps(df: pd.DataFrame, steps_config: Mapping[str, Any]) -> tuple[pd.DataFrame, list[dict]]:
    """Run the configured steps in STEP_ORDER; returns the rows kept and the step records.

    steps_config maps a step name to a mapping of its parameters, to true (defaults), or
    to false/null (skipped), e.g. {"repeat_policy": {"keep": "first"}, "dedup_exact": true}.
    The order of the keys does not matter.
    """
    if not isinstance(steps_config, Mapping):
        raise ConfigError(f"preprocessing steps must be a mapping of step name to parameters, got {steps_config!r}")
    unknown = sorted(set(steps_config) - set(_STEPS))
    if unknown:
        raise ConfigError(f"unknown preprocessing step {unknown[0]!r}; allowed: {', '.join(STEP_ORDER)}")
    plan = []
    for name, step in _STEPS.items():
        value = steps_config.get(name)
        if value is None or value is False:
            continue
        if value is not True and not isinstance(value, Mapping):
            raise ConfigError(f"step {name!r}: expected true, false or a mapping of parameters, got {value!r}")
        params = {} if value is True else dict(value)
        allowed = _step_params(step)
        bad = sorted(set(params) - set(allowed))
        if bad:
            raise ConfigError(f"unknown parameter '{name}.{bad[0]}'; allowed for {name}: {allowed or 'none'}")
        # dry run on zero rows: a bad value fails here, before any real work
        step(df.iloc[:0], **params)
        plan.append((step, params))
    records: list[dict] = []
    for step, params in plan:
        df = step(df, **params, records=records)
    return df, records
