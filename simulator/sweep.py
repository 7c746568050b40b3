"""Grid sweeps (`rtsim sweep FILE`): a YAML file names a grid over configuration keys (the
dotted keys of `--set`) and seeds; it expands into jobs (every grid setting × every seed),
each one ordinary run, written into one sweep directory:

    <runs-dir>/<name>/sweep.json     the spec, every job and its state (one writer: the coordinator)
    <runs-dir>/<name>/jobs/<job-id>/  each job's run directory (job id `s<setting>-seed-<seed>`)
    <runs-dir>/<name>/report.md      the grid's Table 1 and the best settings (simulator/sweep_report.py)

A job is finished when its run directory holds summary.md, so running the same sweep again
skips finished jobs and resumes the others from their checkpoints.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from replay_data.typed_config import ConfigError, load_yaml_text
from simulator.config import RunConfig, resolve
from simulator.rundir import RunDir

SPEC_KEYS = ("name", "description", "preset", "input", "set", "grid", "seeds")
STATES = ("pending", "running", "done", "failed")
# jobs run side by side: every server on a free port (a spec's `set` may still pin one)
FREE_PORTS = tuple(
    f"serve.{key}=0" for key in ("metrics_port", "producer_metrics_port", "control_port", "producer_control_port")
)


class SweepError(ConfigError):
    """A sweep file or directory that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class SweepSpec:
    name: str
    preset: str | None = None
    input: str | None = None
    sets: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    seeds: int | list[int] = 1  # a count (from the base learner.seed) or the seeds themselves
    description: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    id: str  # s<setting>-seed-<seed>
    setting: int  # index of the grid point, in the grid's order
    point: dict[str, Any]  # grid key -> value
    seed: int
    preset: str | None
    input: str | None
    overrides: tuple[str, ...]  # every --set of this job, in order: ports, sets, grid point, seeds

    def config(self) -> RunConfig:
        return resolve(self.preset, None, list(self.overrides), self.input)

    def as_dict(self) -> dict:
        return {**asdict(self), "overrides": list(self.overrides)}

    @classmethod
    def from_dict(cls, data: dict) -> Job:
        """From as_dict(), or a sweep.json entry (which adds the job's state)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names} | {"overrides": tuple(data["overrides"])})


def setting_id(index: int) -> str:
    return f"s{index:02d}"


def setting_label(point: dict[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in point.items()) or "(base)"


def load_spec(path: str | Path, name: str | None = None) -> SweepSpec:
    """Read and check a sweep file's shape; values are checked by `expand`."""
    path = Path(path)
    try:
        data = load_yaml_text(path.read_text())
    except OSError as err:
        raise SweepError(f"cannot read the sweep file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{path} is not valid YAML: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(data) - set(SPEC_KEYS), key=str)
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r}; a sweep file has {', '.join(SPEC_KEYS)}")
    sets, grid = data.get("set") or {}, data.get("grid") or {}
    for key, section in (("set", sets), ("grid", grid)):
        if not isinstance(section, dict) or not all(isinstance(k, str) and k for k in section):
            raise SweepError(f"{path}: {key} maps dotted keys to values, e.g. learner.strategies.sml.rounds: ...")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid {key} must be a non-empty list of values, e.g. {key}: [3, 5]")
        texts = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(texts)) < len(texts):
            raise SweepError(f"{path}: grid {key} lists a value twice: {values}")
    keys = list(sets) + list(grid)
    for a, b in itertools.permutations(keys, 2):
        if a == b or b.startswith(a + "."):
            where = "both set and grid" if a == b else f"{a} and {b} (one inside the other)"
            raise SweepError(f"{path}: {b} is given in {where}; give each key once")
    if "learner.seed" in grid:
        raise SweepError(f"{path}: grid learner.seed: list the seeds under `seeds:` instead")
    seeds = data.get("seeds", 1)
    if isinstance(seeds, bool) or not (
        (isinstance(seeds, int) and seeds >= 1)
        or (
            isinstance(seeds, list)
            and seeds
            and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            and len(set(seeds)) == len(seeds)
        )
    ):
        raise SweepError(f"{path}: seeds is a count >= 1 or a list of distinct integers, got {seeds!r}")
    name = name or data.get("name") or path.stem
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise SweepError(f"{path}: name {name!r} must be a folder name (no '/')")
    for key in ("preset", "input", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise SweepError(f"{path}: {key} must be text, got {data[key]!r}")
    return SweepSpec(
        name=name,
        preset=data.get("preset"),
        input=data.get("input"),
        sets=dict(sets),
        grid={k: list(v) for k, v in grid.items()},
        seeds=seeds,
        description=data.get("description") or "",
    )


def _set(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: resolve() reads the value back exactly


def expand(spec: SweepSpec) -> list[Job]:
    """Every (grid point, seed) as a job, in grid order then seed order. Every grid point's
    configuration is resolved now, so a bad key or value fails before anything runs.

    As in `rtsim run --seeds`, learner.eval_seed is fixed at the base configuration's (its
    eval_seed, else its seed) unless the sweep sets it: every job ranks the same candidates."""
    base_sets = [*FREE_PORTS, *(_set(k, v) for k, v in spec.sets.items())]
    base = _checked(spec, base_sets, "set")
    seeds = list(spec.seeds) if isinstance(spec.seeds, list) else [base.learner.seed + i for i in range(spec.seeds)]
    pin_eval = "learner.eval_seed" not in spec.grid and base.learner.eval_seed is None
    jobs = []
    for index, values in enumerate(itertools.product(*spec.grid.values())):
        point = dict(zip(spec.grid, values, strict=True))
        sets = base_sets + [_set(k, v) for k, v in point.items()]
        if pin_eval:
            sets.append(_set("learner.eval_seed", base.learner.seed))
        _checked(spec, sets, f"grid setting {setting_id(index)} ({setting_label(point)})")
        for seed in seeds:
            jobs.append(
                Job(
                    id=f"{setting_id(index)}-seed-{seed}",
                    setting=index,
                    point=point,
                    seed=seed,
                    preset=spec.preset,
                    input=spec.input,
                    overrides=(*sets, _set("learner.seed", seed)),
                )
            )
    return jobs


def _checked(spec: SweepSpec, sets: list[str], where: str) -> RunConfig:
    try:
        return resolve(spec.preset, None, sets, spec.input)
    except ConfigError as err:
        raise SweepError(f"sweep {spec.name}, {where}: {err}") from None


class SweepDir:
    """A sweep directory and its sweep.json. Only the process running the sweep writes it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.state_file = self.path / "sweep.json"
        self.jobs_root = self.path / "jobs"

    def run_dir(self, job: Job, sweep_name: str) -> RunDir:
        # the run id carries the sweep's name: topic names stay unique across sweeps
        return RunDir(self.jobs_root, f"{sweep_name}-{job.id}", folder=job.id)

    def log_file(self, job_id: str) -> Path:
        """A job's progress lines, outside its run directory (which a restart may empty)."""
        return self.path / "logs" / f"{job_id}.log"

    def finished(self, job_id: str) -> bool:
        return (self.jobs_root / job_id / "summary.md").is_file()

    def load(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            raise SweepError(
                f"{self.path} is not a sweep directory (no sweep.json); give the folder rtsim sweep wrote"
            ) from None
        except (OSError, json.JSONDecodeError) as err:
            raise SweepError(f"{self.state_file} cannot be read ({err}); run the sweep again to rewrite it") from None

    def start(self, spec: SweepSpec, jobs: list[Job]) -> dict:
        """Create or reopen the directory for this spec. A directory of another sweep is refused;
        jobs already finished are marked done, every other job pending."""
        before: dict[str, dict] = {}
        if self.state_file.exists():
            recorded = self.load()
            if recorded.get("spec") != spec.as_dict():
                raise SweepError(
                    f"{self.path} holds a different sweep (its sweep.json has another spec); give this one "
                    "another name (--name) or --runs-dir, or remove that directory"
                )
            before = {job["id"]: job for job in recorded["jobs"]}
        state = {
            "format": 1,
            "spec": spec.as_dict(),
            "coordinator": {"host": socket.gethostname(), "pid": os.getpid()},
            "jobs": [
                # a finished job keeps its record (worker, seconds); any other starts over as pending
                {**before[job.id], "state": "done"}
                if self.finished(job.id) and job.id in before
                else {**job.as_dict(), "state": "done" if self.finished(job.id) else "pending", "worker": None}
                for job in jobs
            ],
        }
        self.path.mkdir(parents=True, exist_ok=True)
        self.save(state)
        return state

    def save(self, state: dict) -> None:
        state["updated"] = time.time()
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)  # `sweep status` never reads half a file


def counts(jobs: list[dict]) -> dict[str, int]:
    return {state: sum(job["state"] == state for job in jobs) for state in STATES}


def coordinator_alive(state: dict) -> bool:
    """Whether the process that wrote sweep.json still runs (known only on its own host)."""
    who = state.get("coordinator") or {}
    if who.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(who.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OSError):
        return True
    return True
