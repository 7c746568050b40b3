"""Prometheus file-based service discovery: each live run announces its metrics endpoints.

A run writes <targets dir>/<run_id>-<side>.json ([{"targets": ["HOST:PORT"], "labels":
{"service": ...}}]) once its exporters listen and removes it when it stops, so one
Prometheus (`rtsim monitor up`, or any with a file_sd_config on the folder) scrapes every
run on the machine without editing its config. A resumed run rewrites its run's files
with its new ports; a killed run's files stay until then (its targets read as down).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from simulator.kafka_local import cache_root

# the scrape jobs of dashboards/prometheus/prometheus.yml (and their `service` label), by side
SIDES = {
    "learner": ("rtsim-learner", "learner"),
    "producer": ("rtsim-replay", "replay"),
    "sweep": ("rtsim-sweep", "sweep"),  # a sweep's progress (simulator/sweep_metrics.py)
}


def targets_dir() -> Path:
    """$RTSIM_TARGETS_DIR, else <cache>/rtsim/prometheus-targets."""
    configured = os.environ.get("RTSIM_TARGETS_DIR")
    return Path(configured).expanduser() if configured else cache_root() / "prometheus-targets"


def target_file(run_id: str, side: str, folder: Path | None = None) -> Path:
    return (folder or targets_dir()) / f"{run_id}-{side}.json"


def write_target(run_id: str, side: str, metrics_url: str) -> Path:
    """Announce one exporter; written whole (rename) since Prometheus watches the folder."""
    address = urlsplit(metrics_url)
    host = address.hostname or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # a wildcard bind is scraped on loopback
    netloc = f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
    path = target_file(run_id, side)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps([{"targets": [netloc], "labels": {"service": SIDES[side][1]}}]) + "\n")
    temporary.replace(path)
    return path
