"""Deployment files: compose (``docker compose config``), Kubernetes manifests (schema
validation with the offline schemas of ``kubernetes-validate``), systemd units
(``systemd-analyze verify``) and the Dockerfile, plus consistency checks that need no tools:
the commands they run exist, station configs they ship are valid, ports and volumes line up."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from inspection.cli import app as cli_app
from inspection.station.config import load_station_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"
COMPOSE_ENV = {"INSPECTION_DB_PASSWORD": "compose-test", "INSPECTION_API_SECRET_KEY": "k" * 40}
APP_UID = 10001


def _cli_commands() -> set[tuple[str, ...]]:
    """Every command path of the ``inspection`` CLI, e.g. ``("station", "run")``."""
    found: set[tuple[str, ...]] = set()

    def walk(cmd: Any, prefix: tuple[str, ...]) -> None:
        found.add(prefix)
        for name, sub in getattr(cmd, "commands", {}).items():  # groups (typer vendors click)
            walk(sub, (*prefix, name))

    walk(typer.main.get_command(cli_app), ())
    return found


def _check_command(argv: list[str]) -> None:
    """``argv`` (``inspection ...``) names an existing CLI command (groups of other issues that
    are not registered yet are tolerated, not invented)."""
    assert argv[0] == "inspection", argv
    words = [w for w in argv[1:] if not w.startswith("-")]
    commands = _cli_commands()
    if words[0] == "scheduler" and ("scheduler",) not in commands:
        return  # the retraining issue's group, not registered in inspection/cli.py yet
    for n in (2, 1):
        if tuple(words[:n]) in commands and (n == 1 or len(words) >= 2):
            return
    raise AssertionError(f"{' '.join(argv)} is not an inspection command")


# -- compose -----------------------------------------------------------------------------------


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def _load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_compose_config_is_valid() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": "/tmp", **COMPOSE_ENV}
    result = subprocess.run(
        [*cli, "-f", str(DEPLOY / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert {"postgres", "api", "migrate", "station-a", "station-b"} <= set(rendered["services"])
    # Without the secrets compose refuses to render, naming the variable.
    missing = subprocess.run(
        [*cli, "-f", str(DEPLOY / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": env["PATH"], "HOME": "/tmp"},
        check=False,
    )
    assert missing.returncode != 0
    assert "INSPECTION_DB_PASSWORD" in missing.stderr + missing.stdout


def test_compose_services_are_consistent() -> None:
    compose = _load_compose()
    services = compose["services"]
    stations = {k: v for k, v in services.items() if k.startswith("station-")}
    assert stations, "no station services"
    spools = set()
    for name, svc in stations.items():
        _check_command(svc["command"])
        config = ROOT / svc["command"][-1]
        assert load_station_config(config).id, config
        env = svc["environment"]
        assert env["INSPECTION_SPOOL_DIR"] == "/var/lib/inspection/spool"
        assert env["INSPECTION_METRICS_ADDR"] == "0.0.0.0"
        spool = next(
            v.split(":")[0] for v in svc["volumes"] if v.endswith(env["INSPECTION_SPOOL_DIR"])
        )
        assert spool in compose["volumes"], name
        spools.add(spool)
        assert "postgresql://" in env["INSPECTION_DATABASE_URL"]
    assert len(spools) == len(stations), "every station needs its own spool volume"
    for name in ("api", "migrate", "scheduler"):
        if name in services:
            _check_command(services[name]["command"])
    assert "/api/ready" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["postgres"]["image"].startswith("postgres:")
    text = (DEPLOY / "compose.yaml").read_text()
    assert not re.search(r"PASSWORD: +[^$\s]", text), "no literal passwords in compose.yaml"


# -- Kubernetes --------------------------------------------------------------------------------


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def test_kubernetes_manifests_pass_the_schema_validator() -> None:
    kv = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate (offline Kubernetes JSON schemas) is not installed",
    )
    docs = _k8s_documents()
    kinds = {doc["kind"] for _, doc in docs}
    assert {"StatefulSet", "Deployment", "Service", "ConfigMap", "Job"} <= kinds
    for name, doc in docs:
        try:
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as exc:
            raise AssertionError(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc}") from None
    # The validator is live: a misspelt field is rejected.
    broken = next(d for _, d in docs if d["kind"] == "StatefulSet")
    broken = {**broken, "spec": {**broken["spec"], "replica": 2}}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES_VERSION, strict=True)


def _workloads() -> list[tuple[str, dict[str, Any]]]:
    return [
        (n, d) for n, d in _k8s_documents() if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


def test_kubernetes_manifests_are_consistent(tmp_path: Path) -> None:
    docs = _k8s_documents()
    assert not [n for n, d in docs if d["kind"] == "Secret"], "secrets are never committed"
    claims = {d["metadata"]["name"] for _, d in docs if d["kind"] == "PersistentVolumeClaim"}
    config_maps = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "ConfigMap"}
    for name, doc in _workloads():
        spec = doc["spec"]
        pod = spec["template"]["spec"]
        if doc["kind"] != "Job":
            assert (
                spec["selector"]["matchLabels"].items()
                <= spec["template"]["metadata"]["labels"].items()
            ), name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        for container in pod["containers"]:
            if container["image"].startswith("registry.example.com/inspection"):
                _check_command(container["command"])
                assert pod["securityContext"]["runAsUser"] == APP_UID, name
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                http = container.get(probe, {}).get("httpGet")
                if http is not None:
                    assert http["port"] in ports, (name, probe)
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, (name, mount)
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (name, volume)
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, (name, volume)
    # The station configs shipped in the ConfigMap are valid, one per StatefulSet replica.
    stations = next(d for _, d in _workloads() if d["metadata"]["name"] == "inspection-station")
    folder = tmp_path / "stations"
    folder.mkdir()
    files = config_maps["inspection-stations"]["data"]
    for key, text in files.items():
        (folder / key).write_text(text)
    pods = [f"inspection-station-{i}" for i in range(stations["spec"]["replicas"])]
    ids = {load_station_config(folder / f"{pod}.yaml").id for pod in pods}
    assert len(ids) == len(pods), "every station pod needs its own station id"
    assert "defaults.yaml" in files
    api = next(d for _, d in _workloads() if d["metadata"]["name"] == "inspection-api")
    api_container = api["spec"]["template"]["spec"]["containers"][0]
    assert api_container["livenessProbe"]["httpGet"]["path"] == "/api/health"
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/api/ready"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource


def test_probe_paths_exist_in_the_app() -> None:
    from inspection.api.app import create_app
    from inspection.api.settings import ApiSettings

    app = create_app(
        ApiSettings(database_url="sqlite://", check_schema=False, secret_key="s" * 40)  # type: ignore[arg-type]
    )
    assert {"/api/health", "/api/ready"} <= set(app.openapi()["paths"])
    assert "/metrics" in {getattr(r, "path", None) for r in app.routes}


# -- systemd -----------------------------------------------------------------------------------


def _units() -> list[Path]:
    return sorted((DEPLOY / "systemd").glob("*.service"))


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    inspection = Path(sys.executable).with_name("inspection")
    if not inspection.exists():
        pytest.skip("the inspection console script is not installed beside this Python")
    targets = []
    for unit in _units():
        text = unit.read_text().replace("/opt/inspection/.venv/bin/inspection", str(inspection))
        (tmp_path / unit.name).write_text(text)
        instance = unit.name.replace("@.service", "@example.service")
        targets.append(str(tmp_path / instance))
    result = subprocess.run(
        [analyze, "verify", *targets], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_units_are_consistent() -> None:
    units = _units()
    assert {u.name for u in units} >= {"inspection-line@.service", "inspection-station@.service"}
    for unit in units:
        text = unit.read_text()
        exec_start = re.search(r"^ExecStart=(.+)$", text, re.M)
        assert exec_start is not None, unit
        argv = exec_start.group(1).split()
        _check_command(["inspection", *argv[1:]])
        assert "Restart=always" in text
        assert "Environment=INSPECTION_SPOOL_DIR=/var/lib/inspection/spool" in text
        assert "EnvironmentFile=/etc/inspection/env" in text
        stop = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
        assert stop >= 90, "a graceful stop may take persist_retry_s + 30 s"


# -- Dockerfile --------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.station"])
def test_dockerfile_matches_the_manifests(dockerfile: str) -> None:
    text = (DEPLOY / dockerfile).read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert f"--uid {APP_UID}" in text and f"USER {APP_UID}" in text
    assert "EXPOSE 8000 9108" in text
    assert "INSPECTION_MIGRATIONS_DIR=/opt/inspection/migrations" in text
    ignore = (DEPLOY / f"{dockerfile}.dockerignore").read_text()
    for needed in ("inspection/", "migrations/", "stations/", "pyproject.toml"):
        assert f"!{needed}" in ignore


def test_images_install_the_right_extras() -> None:
    """The full image trains (extra ``train``); the station image is the lean base install."""
    full = (DEPLOY / "Dockerfile").read_text()
    lean = (DEPLOY / "Dockerfile.station").read_text()
    assert "pip install '.[train]'" in full
    installs = re.findall(r"pip install ([^\n&\\]+)", lean)
    assert installs and all("[" not in i and "torch" not in i for i in installs), installs
    assert '! python -c "import torch"' in lean
