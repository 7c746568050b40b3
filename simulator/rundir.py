"""Run directories: runs/<run-id>/ with the resolved config, periods.csv and summaries."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from simulator.config import RunConfig, dump


def new_run_id(preset: str) -> str:
    return f"{preset}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


class RunDir:
    def __init__(self, root: str | Path, run_id: str, folder: str | None = None) -> None:
        """folder: the directory's name under root, when it is not the run id (a seed of a
        sweep: its run id, and so its topic names, stay unique across sweeps)."""
        self.run_id = run_id
        self.path = Path(root) / (folder or run_id)
        self.fresh = False  # create() made the directory

    def create(self, cfg: RunConfig) -> RunDir:
        self.fresh = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "config.yaml").write_text(dump(cfg))
        except OSError as err:
            raise SystemExit(
                f"rtsim: cannot write the run directory {self.path}: {err.strerror}; choose another --runs-dir"
            ) from None
        return self

    @contextmanager
    def removed_if_refused(self) -> Iterator[RunDir]:
        """A run refused before it produced anything (a config or safety check) leaves no
        directory holding only its config.yaml, which would look like a run."""
        try:
            yield self
        except Exception:
            if self.fresh and {p.name for p in self.path.iterdir()} <= {"config.yaml", self.data_dir_file.name}:
                shutil.rmtree(self.path)
            raise

    @property
    def data_dir_file(self) -> Path:
        """The --data-dir the run prepared its log in, so that --resume finds the same log."""
        return self.path / "data_dir"

    @property
    def periods_csv(self) -> Path:
        return self.path / "periods.csv"

    @property
    def summary_md(self) -> Path:
        return self.path / "summary.md"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def base_model(self) -> Path:
        return self.checkpoints / "base_model.pt"

    def save_base_model(self, engine) -> None:
        """The shared pretrained MF with its raw ids, e.g. to start another implementation from it."""
        self.base_model.parent.mkdir(parents=True, exist_ok=True)
        users, items = engine.base_model.embeddings()
        n_users, n_items = users.shape[0], items.shape[0]
        torch.save(
            {
                "users": users.cpu(),
                "items": items.cpu(),
                "user_ids": engine.user_vocab.ids[:n_users],
                "item_ids": engine.item_vocab.ids[:n_items],
            },
            self.base_model,
        )

    def write_endpoints(self, endpoints: dict) -> None:
        (self.path / "endpoints.json").write_text(json.dumps(endpoints, indent=2))
