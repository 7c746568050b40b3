"""Atomic, checksummed checkpoints of the learner, the newest N kept.

A checkpoint is written to a temporary file, fsynced, renamed to ckpt-<period>.pt, its
SHA-256 written beside it the same way, and only then the `latest` pointer is replaced.
A crash at any moment leaves the previous checkpoint and pointer intact. Loading checks
the checksum and falls back to older checkpoints, saying which one it used and why.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

log = logging.getLogger("rtsim.checkpoint")
T = TypeVar("T")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or none can be read; the message says what to do."""


def _write_atomic(path: Path, write: Callable[[BinaryIO], T]) -> T:
    """Write through a temporary file, fsync, rename; returns what `write` returned."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            result = write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not stay full of our half-written file
        raise
    return result


class _HashingWriter:
    """Passes bytes on to a file and hashes them on the way, so a checkpoint streams to disk
    instead of being built in memory first (in memory it cost two copies of the state)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.error: OSError | None = None  # torch.save hides it behind a RuntimeError

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_of(path: Path, block: int = 1 << 20) -> str:
    """In blocks: a checkpoint can be GBs, and reading it whole doubles a resume's memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


class CheckpointStore:
    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def _name(self, period: int) -> str:
        return f"ckpt-{period:06d}.pt"

    def save(self, period: int, state: dict) -> Path:
        import torch  # here, so the CLI can name CheckpointError without loading torch

        path = self.directory / self._name(period)

        def save_hashed(handle: BinaryIO) -> str:
            writer = _HashingWriter(handle)
            try:
                torch.save(state, writer)
            except RuntimeError:
                if writer.error is not None:
                    raise writer.error from None
                raise
            return writer.sha256.hexdigest()

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            digest = _write_atomic(path, save_hashed)
            _write_atomic(path.with_suffix(".sha256"), lambda handle: handle.write(digest.encode()))
            _fsync_dir(self.directory)
            _write_atomic(self.directory / "latest", lambda handle: handle.write(path.name.encode()))
            _fsync_dir(self.directory)
        except OSError as err:
            previous = self._pointer()
            raise CheckpointError(
                f"cannot write checkpoint {path}: {err.strerror or err}; "
                + (
                    f"the previous checkpoint {previous} is intact (resume with --resume)"
                    if previous
                    else "no earlier checkpoint exists"
                )
                + "; free disk space or make the run directory writable"
            ) from err
        finally:
            # torch.save defines its pickler class inside the call, and that class's closure
            # holds every storage it wrote: a reference cycle that lives until Python's next
            # full collection. Tables replaced meanwhile (grown for new users) would stay
            # resident twice over; on the full Adressa shape that was 2.4 GB through a period.
            gc.collect()
        self._prune()
        return path

    def _pointer(self) -> str | None:
        pointer = self.directory / "latest"
        return pointer.read_text().strip() if pointer.exists() else None

    def _prune(self) -> None:
        for old in sorted(self.directory.glob("ckpt-*.pt"))[: -self.keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".sha256").unlink(missing_ok=True)

    def load_latest(self, report: Callable[[str], None] = log.warning) -> tuple[dict, Path]:
        """The newest checkpoint whose checksum holds (the pointer's first)."""
        candidates = sorted(self.directory.glob("ckpt-*.pt"), reverse=True)
        pointer = self._pointer()
        candidates.sort(key=lambda p: p.name != pointer)  # the pointer's target first, order kept
        import torch

        for path in candidates:
            problem = self._verify(path)
            if problem is None:
                return torch.load(path, map_location="cpu", weights_only=False), path
            report(f"checkpoint {path.name} is unusable ({problem}); trying an older one")
        raise CheckpointError(f"no valid checkpoint in {self.directory}: start the run afresh without --resume")

    def _verify(self, path: Path) -> str | None:
        digest_path = path.with_suffix(".sha256")
        if not digest_path.exists():
            return "no checksum file: the write did not finish"
        if _sha256_of(path) != digest_path.read_text().strip():
            return "checksum mismatch: the file is corrupt or partial"
        return None
