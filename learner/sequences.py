"""Per-user item sequences cut from the shared history, for the sequence models.

A user's sequence is their items in history order (periods in order, each sorted by
(ts, user, item)). Every helper here reads only the arrays it is given, so what a model
sees is exactly what its caller passes: the leakage rule (docs/architecture.md,
"Sequence models") is kept by passing the history before the period being scored.
"""

from __future__ import annotations

import numpy as np
import torch

PAD = -1  # the item id of an empty slot: it embeds to zeros and leaves a GRU state unchanged


def relative_items(users: np.ndarray, items: np.ndarray, start: int, offsets: np.ndarray) -> np.ndarray:
    """For every event k >= start of (users, items): the items of the same user at positions
    k + offsets within that user's sequence, PAD where the sequence has none.

    offsets -L..-1 give the L items before each event (a model's input window); 0..T-1 give
    the event's item and the T-1 after it (Caser's targets). (n - start, len(offsets)) int64.
    """
    n = len(users)
    by_user = np.argsort(users, kind="stable")  # stable: each user's events stay in history order
    sorted_users = users[by_user]
    group_start = np.searchsorted(sorted_users, sorted_users, side="left")
    group_end = np.searchsorted(sorted_users, sorted_users, side="right")
    where = np.empty(n, dtype=np.int64)  # position of each event in the user-sorted order
    where[by_user] = np.arange(n)
    at = where[start:, None] + offsets[None, :]
    rows = where[start:]
    inside = (at >= group_start[rows, None]) & (at < group_end[rows, None])
    return np.where(inside, items[by_user][np.clip(at, 0, max(n - 1, 0))], PAD).astype(np.int64)


def last_items(users: np.ndarray, items: np.ndarray, n_users: int, window: int) -> np.ndarray:
    """(n_users, window): each user's last `window` items in (users, items), oldest first,
    left-padded with PAD. A user absent from the arrays gets an all-PAD row."""
    # one query event per user after everything given: its input window is what we want
    queries = np.arange(n_users, dtype=np.int64)
    return relative_items(
        np.concatenate([users.astype(np.int64), queries]),
        np.concatenate([items.astype(np.int64), np.full(n_users, PAD, dtype=np.int64)]),
        len(users),
        np.arange(-window, 0),
    )


def embed(table: torch.Tensor, ids: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """table[ids] with PAD slots as zero rows. `sparse`: the table's gradient is a sparse
    tensor of the rows looked up, so an optimiser that supports it touches only those."""
    present = ids != PAD
    rows = lookup(table, ids.clamp_min(0), sparse)
    return rows * present.unsqueeze(-1).to(table.dtype)


def lookup(table: torch.Tensor, ids: torch.Tensor, sparse: bool) -> torch.Tensor:
    """table[ids], with a sparse gradient for the table when `sparse`."""
    return torch.nn.functional.embedding(ids, table, sparse=True) if sparse else table[ids]


def widening(dim_in: int, dim_out: int, rng: np.random.Generator) -> torch.Tensor:
    """A fixed (dim_in, dim_out) map for rows of the shared initial width (model.dim) into a
    model's own width: the identity when they agree, else N(0, 1/dim_in) entries, which keep
    each entry's variance (so new rows are still N(0, init_std²) and depend only on the
    seed and the raw id)."""
    if dim_in == dim_out:
        return torch.eye(dim_in)
    return torch.from_numpy(rng.standard_normal((dim_in, dim_out)) / np.sqrt(dim_in)).float()


def grow_parameter(param: torch.nn.Parameter, rows: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """Append rows to an embedding parameter in place of it, keeping the optimiser's state
    for the old rows (zero state, as for a fresh parameter, for the new ones)."""
    state = optimizer.state.get(param, {})
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            state[key] = torch.cat([value, value.new_zeros((len(rows), *value.shape[1:]))])
    param.data = torch.cat([param.data, rows.to(param)])
