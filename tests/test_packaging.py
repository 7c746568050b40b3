"""Packaging: the wheel holds the three packages and their presets, nothing at the top level
called `configs`, and `rtsim run --preset tiny` works from it in a fresh virtual environment."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("replay_data", "learner", "simulator")


def _can_build_offline() -> bool:
    """setuptools >= 68 and wheel here: build without an isolated (downloading) environment."""
    if importlib.util.find_spec("wheel") is None:
        return False
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= 68


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # build from a copy of the sources, so the checkout gets no build/ or egg-info
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if _can_build_offline() else []
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = out.glob("rtsim-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_the_packages_and_their_presets_and_no_configs_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == set(PACKAGES)
    presets = sorted(Path(n).stem for n in names if n.startswith("replay_data/preset_files/") and n.endswith(".yaml"))
    assert presets == sorted(p.stem for p in (ROOT / "replay_data" / "preset_files").glob("*.yaml"))
    assert "tiny" in presets


@pytest.mark.slow
def test_rtsim_run_tiny_from_the_wheel_in_a_fresh_virtual_environment(wheel, tmp_path):
    venv = tmp_path / "venv"
    # --system-site-packages: torch and the other dependencies come from this interpreter
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python, rtsim = venv / "bin" / "python", venv / "bin" / "rtsim"
    # -I: install it here even though an (editable) rtsim is visible from the system site
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-I", "--no-deps", str(wheel)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg-cache")
    where = tmp_path / "elsewhere"  # not the checkout: nothing may come from the source tree
    where.mkdir()
    found = subprocess.run(
        [
            str(python),
            "-c",
            "import replay_data, learner, simulator; "
            "print('\\n'.join(m.__file__ for m in (replay_data, learner, simulator)))",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=where,
        timeout=120,
        check=True,
    )
    assert all(Path(f).is_relative_to(venv) for f in found.stdout.split()), found.stdout
    # what the install added, from its RECORD (the system site may hold a developer's editable rtsim)
    record = subprocess.run(
        [
            str(python),
            "-c",
            "from importlib.metadata import distribution; d = distribution('rtsim'); "
            "print(d.locate_file('')); print(*sorted({str(f).split('/')[0] for f in d.files}))",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=where,
        timeout=120,
        check=True,
    )
    location, installed = record.stdout.splitlines()
    assert Path(location).is_relative_to(venv)
    top = {name for name in installed.split() if not name.endswith(".dist-info") and name != ".."}
    assert top == set(PACKAGES), "installing rtsim adds the three packages and no top-level configs"
    done = subprocess.run(
        [
            str(rtsim),
            "run",
            "--preset",
            "tiny",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--data-dir",
            str(tmp_path / "prepared"),
            "--run-id",
            "from-wheel",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=where,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    periods = (tmp_path / "runs" / "from-wheel" / "periods.csv").read_text().splitlines()
    assert len(periods) > 1 and periods[0].startswith("period,phase,strategy")


def _imported_top_level(folder: Path) -> set[str]:
    """Top-level names of the absolute imports in every module under `folder`."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _canonical(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize(
    ("folders", "extras"),
    [(PACKAGES, ()), (("tests",), ("dev",)), (("benchmarks",), ("dev", "bench"))],
    ids=["packages", "tests", "benchmarks"],
)
def test_every_third_party_import_is_a_declared_dependency(folders, extras):
    # a module that is only installed by chance (a benchmark extra's dependency, say) makes a
    # fresh machine fail where this one passes
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_canonical(r) for r in project["dependencies"]}
    declared |= {_canonical(r) for extra in extras for r in project["optional-dependencies"][extra]}
    # the project's packages, and the scripts that tests and benchmarks import as siblings
    local = {*PACKAGES, "tests", "benchmarks"} | {
        p.stem for f in ("tests", "benchmarks") for p in (ROOT / f).glob("*.py")
    }
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for name in set().union(*(_imported_top_level(ROOT / f) for f in folders)):
        if name in sys.stdlib_module_names or name in local or name == "setuptools":
            continue
        owners = {_canonical(d) for d in distributions.get(name, [name])}
        if not owners & declared:
            missing[name] = sorted(owners)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
