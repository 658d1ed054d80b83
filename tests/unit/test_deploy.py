"""deploy/ is checked without a container engine: the Kubernetes manifests against the API schemas
(kubernetes-validate, offline), and every file against the code: each SCALEOT_* name used anywhere in
deploy/ is a real setting, every setting is documented in deploy/README.md, every command exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from model_owner_server.cli import app
from model_owner_server.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.31.0"
SETTING = re.compile(r"\bSCALEOT_[A-Z0-9_]+\b")
NOT_SETTINGS = {"SCALEOT_CACHE_DIR", "SCALEOT_PORT", "SCALEOT_TEST_POSTGRES_URL"}  # read outside Settings


def settings_env_names() -> set[str]:
    return {f"SCALEOT_{name.upper()}" for name in Settings.model_fields}


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object in deploy/k8s (the kustomization itself is not one)."""
    out = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        out += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] != "Kustomization"]
    return out


def test_kubernetes_manifests_match_the_api_schema() -> None:
    validate = pytest.importorskip("kubernetes_validate")
    checked = 0
    for _path, doc in manifests():
        validate.validate(doc, K8S_VERSION, strict=True)  # raises on unknown or mistyped fields
        checked += 1
    assert checked >= 10


def test_kustomization_lists_every_manifest_but_the_on_demand_ones() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    on_demand = {"kustomization.yaml", "secret.example.yaml", "stage1-job.yaml"}  # applied by hand
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - on_demand
    assert set(kustomization["resources"]) == files


def test_every_name_in_deploy_is_a_setting_and_every_setting_is_documented() -> None:
    known = settings_env_names() | NOT_SETTINGS
    for path in [*DEPLOY.rglob("*"), DEPLOY / ".env.example"]:
        if path.is_file():
            unknown = set(SETTING.findall(path.read_text())) - known
            assert not unknown, f"{path.relative_to(DEPLOY)} uses {sorted(unknown)}, which no setting reads"
    readme = (DEPLOY / "README.md").read_text()
    undocumented = sorted(name for name in settings_env_names() if f"`{name}`" not in readme)
    assert not undocumented, f"deploy/README.md does not document {undocumented}"


def test_config_and_secret_give_a_valid_production_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in manifests()}
    env = {**docs[("ConfigMap", "scaleot-config")]["data"], **docs[("Secret", "scaleot-secrets")]["stringData"]}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.environment == "production" and settings.storage == "s3" and settings.s3_bucket
    assert settings.db_url.startswith("postgresql+psycopg://")


def test_pods_reference_only_what_the_manifests_define() -> None:
    docs = manifests()
    names = {(doc["kind"], doc["metadata"]["name"]) for _, doc in docs}
    secret_keys = set(next(d for _, d in docs if d["kind"] == "Secret")["stringData"])
    for path, doc in docs:
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
            "template", {}).get("spec")
        if not pod:
            continue
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in names, (path.name, claim)
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in names
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secret_keys, (path.name, ref)


def commands_in_deploy() -> list[list[str]]:
    """Every `scaleot-server ...` command line in the compose file, the manifests and the Dockerfile."""
    found: list[list[str]] = []
    for _, doc in manifests():
        found += _yaml_commands(doc)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    found += [_strip(svc["command"]) for svc in compose["services"].values()
              if isinstance(svc.get("command"), list) and svc["command"][0] == "scaleot-server"]
    cmd = re.search(r"^CMD (\[.*\])$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert cmd is not None
    found.append(_strip(yaml.safe_load(cmd.group(1))))
    return found


def _yaml_commands(node: Any) -> list[list[str]]:
    if isinstance(node, dict):
        out = []
        for key, value in node.items():
            if key in ("command", "args") and isinstance(value, list) and value and value[0] == "scaleot-server":
                out.append(_strip(value))
            else:
                out += _yaml_commands(value)
        return out
    if isinstance(node, list):
        return [c for item in node for c in _yaml_commands(item)]
    return []


def _strip(command: list[str]) -> list[str]:
    """The subcommand path and option names, values dropped where they are shell variables."""
    return [part for part in command[1:] if not part.startswith("$")]


def test_every_command_in_deploy_parses_with_the_real_cli() -> None:
    commands = commands_in_deploy()
    assert len(commands) >= 4
    runner = CliRunner()
    for command in commands:
        options = [i for i, part in enumerate(command) if part.startswith("--")]
        subcommand = command[: options[0]] if options else command
        result = runner.invoke(app, [*subcommand, "--help"])
        assert result.exit_code == 0, (shlex.join(command), result.output)
        for index in options:
            assert command[index].split("=")[0] in result.output, (shlex.join(command), command[index])
