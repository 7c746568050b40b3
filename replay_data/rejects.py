"""Counting what a reader or filter drops, so nothing is lost silently."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class InputError(ValueError):
    """The input cannot be read as asked (an unreadable header, an absent column, no events
    in the schedule's range): the user's to fix, reported in one line."""


class MissingInputError(InputError, FileNotFoundError):
    """The input file or folder (or prepared log) does not exist."""


class MalformedInputError(InputError):
    """Raised on the first malformed record in strict mode, and for an unreadable input
    file (a damaged archive)."""


@dataclass
class Rejects:
    """Counts dropped records by reason and keeps the first few as `file:line: reason`.

    Readers call `reject(...)` for every record they skip. In strict mode the first call
    raises `MalformedInputError` instead, so a user can stop at the first bad line.
    """

    strict: bool = False
    keep_examples: int = 5
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    on_purpose: set[str] = field(default_factory=set)  # reasons counted by drop()

    def reject(self, reason: str, where: str, detail: str = "") -> None:
        message = f"{where}: {reason}" + (f" ({detail})" if detail else "")
        if self.strict:
            raise MalformedInputError(message)
        self.counts[reason] += 1
        if len(self.examples) < self.keep_examples:
            self.examples.append(message)

    def drop(self, reason: str, n: int = 1) -> None:
        """Count records dropped on purpose (e.g. front-page views); never fatal."""
        if n:
            self.counts[reason] += n
            self.on_purpose.add(reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def malformed(self) -> int:
        """Records rejected as bad, not dropped on purpose."""
        return sum(n for reason, n in self.counts.items() if reason not in self.on_purpose)

    def as_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "examples": list(self.examples)}
