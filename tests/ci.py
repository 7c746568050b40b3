"""Missing integration services: a skip on a developer's machine, a failure in CI."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip the test with `reason`, except in CI (CI=true), where it fails: CI must never
    pass by skipping the Kafka or Prometheus tests."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: integration tests must run)", pytrace=False)
    pytest.skip(reason)
