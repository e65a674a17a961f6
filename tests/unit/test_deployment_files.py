"""What an operator deploys with (deploy/systemd, deploy/kubernetes, deploy/compose.yaml) is checked offline.

- The systemd units pass ``systemd-analyze verify`` with no warning (the
  install path replaced by this checkout's venv, so ``ExecStart`` exists).
- The Kubernetes manifests validate against the Kubernetes schemas
  (kubernetes-validate, strict: no unknown field).
- Every ``sla-stream`` command line in them parses with the real CLI, the
  settings they ship load, the environment they pass is what the settings
  read, and the probes they use are the worker's.
- The compose file's services listen where the default settings look.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from stream.cli import build_parser
from stream.config import load_settings

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
KUBERNETES = REPO / "deploy" / "kubernetes"
INSTALLED_VENV = "/opt/sla-stream/.venv"
UNITS = sorted(SYSTEMD.glob("*.service"))
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
KUBERNETES_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests are checked against (policy/v1, batch/v1, startupProbe: all older)."""


def documents() -> list[tuple[str, dict]]:
    return [
        (f"{path.name}#{i}", document)
        for path in MANIFESTS
        for i, document in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        if document
    ]


def kinds() -> dict[str, dict]:
    return {document["kind"]: document for _, document in documents()}


def exec_start(unit: Path) -> list[str]:
    line = next(line for line in unit.read_text(encoding="utf-8").splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_there_are_units_and_manifests() -> None:
    assert {unit.name for unit in UNITS} == {"sla-stream-worker@.service", "sla-stream-topics.service"}
    assert {"Deployment", "PodDisruptionBudget", "ConfigMap", "Secret", "Job", "NetworkPolicy"} <= set(kinds())


def test_the_systemd_units_verify_without_a_warning(tmp_path: Path) -> None:
    venv = str(Path(sys.executable).parent.parent)
    names = []
    for unit in UNITS:
        name = unit.name.replace("@.service", "@9464.service")
        (tmp_path / name).write_text(unit.read_text(encoding="utf-8").replace(INSTALLED_VENV, venv), encoding="utf-8")
        names.append(f"./{name}")
    done = subprocess.run(["systemd-analyze", "verify", *names], cwd=tmp_path, capture_output=True, text=True)
    assert (done.returncode, done.stderr.strip()) == (0, ""), done.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_each_unit_runs_a_command_the_cli_knows(unit: Path) -> None:
    command = exec_start(unit)
    assert command[0] == f"{INSTALLED_VENV}/bin/sla-stream"
    args = build_parser().parse_args([arg.replace("%i", "9464") for arg in command[1:]])
    assert args.config == Path("/etc/sla-stream/sla-stream.toml")


@pytest.mark.parametrize(("name", "document"), documents(), ids=[name for name, _ in documents()])
def test_each_manifest_validates_against_the_kubernetes_schemas(name: str, document: dict) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_a_wrong_manifest_is_refused() -> None:
    """A guard: the validator really looks (replicas must be a number)."""
    broken = yaml.safe_load((KUBERNETES / "worker-deployment.yaml").read_text(encoding="utf-8"))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_manifests_commands_settings_probes_and_environment_fit_the_worker(tmp_path: Path) -> None:
    found = kinds()
    settings_file = tmp_path / "sla-stream.toml"
    settings_file.write_text(found["ConfigMap"]["data"]["sla-stream.toml"], encoding="utf-8")
    environment = found["Secret"]["stringData"]
    settings = load_settings(settings_file, environ=environment)
    assert settings.redis_url == environment["REDIS_URL"] and settings.kafka_bootstrap == environment["KAFKA_BOOTSTRAP"]
    assert settings.replication_factor == 3
    for kind in ("Deployment", "Job"):
        [container] = found[kind]["spec"]["template"]["spec"]["containers"]
        build_parser().parse_args(container["args"])
        assert container["envFrom"] == [{"secretRef": {"name": found["Secret"]["metadata"]["name"]}}]
    [worker] = found["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    selector = found["Deployment"]["spec"]["selector"]["matchLabels"]
    assert found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert found["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == selector


def test_the_compose_services_listen_where_the_default_settings_look() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    defaults = load_settings(environ={})
    ports = {name: service["ports"] for name, service in compose["services"].items()}
    assert ports["kafka"] == [f"{defaults.kafka_bootstrap}:9092"]
    assert ports["redis"] == [f"127.0.0.1:{defaults.redis_url.rsplit(':', 1)[1].split('/')[0]}:6379"]
