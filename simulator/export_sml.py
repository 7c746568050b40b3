"""Export a prepared log in the layout of the SML authors' code (docs/fidelity.md, "Their side").

information.npy = [n_interactions, n_users, n_items]; train/<t>.npy = (user, item) rows of
period t; test/<t>.npy = (user, positive, 999 negatives) drawn by our evaluation's rule
and seeds, so both implementations rank exactly the same candidates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from learner.candidates import sample_eval_candidates
from learner.history import History
from learner.period import stream_rng
from replay_data.prepared import PreparedLog


def export_sml(
    log: PreparedLog, out: str | Path, *, seed: int = 0, negatives: int = 999, progress: bool = True
) -> dict:
    """Write the layout; returns counts, including rows padded for lack of eligible negatives.

    The reference format needs exactly `negatives` columns; a row with fewer eligible
    items (early, small catalogues) repeats its own negatives to fill them, and is counted.
    A row with none (the user has every item seen so far, e.g. the log's first row) holds
    its positive in every column, counted apart: the authors' code indexes embedding tables
    with these columns, where a -1 sentinel would silently mean the last item.
    """
    out = Path(out)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)
    users = log.users.astype(np.int64)
    items = log.items.astype(np.int64)
    np.save(out / "information.npy", np.array([len(users), len(log.user_ids), len(log.item_ids)], dtype=np.int64))
    bounds = log.period_bounds()
    history = History()
    n_items_before = 0
    padded = empty = 0
    for t in tqdm(range(len(log.phases)), desc="export-sml", unit="period", disable=not progress):
        u, i = users[bounds[t] : bounds[t + 1]], items[bounds[t] : bounds[t + 1]]
        np.save(out / "train" / f"{t}.npy", np.stack([u, i], axis=1))
        cand = sample_eval_candidates(history, u, i, n_items_before, negatives, stream_rng(seed, "eval", t))
        short = np.flatnonzero(cand.counts < negatives)
        padded += len(short)
        for r in short:
            if cand.counts[r]:
                cand.negatives[r] = np.resize(cand.negatives[r, : cand.counts[r]], negatives)
            else:
                cand.negatives[r] = i[r]
                empty += 1
        np.save(out / "test" / f"{t}.npy", np.concatenate([u[:, None], i[:, None], cand.negatives], axis=1))
        history.extend(u, i)
        n_items_before = max(n_items_before, int(i.max()) + 1) if len(i) else n_items_before
    return {
        "periods": len(log.phases),
        "interactions": len(users),
        "padded_rows": padded,
        "rows_without_negatives": empty,
        "out": str(out),
    }
