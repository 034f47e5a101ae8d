"""The container image, compose file and Kubernetes manifests, checked without a daemon."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from shoal.cli.main import node_command

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
PORTS = {"4150/tcp", "4151/tcp", "4160/tcp", "4160/udp", "4161/tcp"}


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc["kind"] == kind]


def parse_node_args(args: list[str]) -> dict[str, Any]:
    """Parse ``shoal node`` flags as the CLI would (unknown or bad flags raise)."""
    with node_command.make_context("node", list(args)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_validates_against_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_a_broken_manifest_is_caught() -> None:
    (statefulset,) = by_kind("StatefulSet")
    statefulset["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, kubernetes_validate.latest_version(), strict=True)


def test_statefulset_seeds_from_its_headless_service_and_is_keyed() -> None:
    (statefulset,) = by_kind("StatefulSet")
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    headless = services[statefulset["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= labels.items()
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]

    env = {"POD_NAME": "shoal-0", "POD_IP": "10.0.0.7", "NAMESPACE": "default",
           "GOSSIP_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}  # fmt: skip
    declared = {e["name"] for e in container["env"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    assert set(re.findall(r"\$\((\w+)\)", " ".join(container["args"]))) <= declared
    params = parse_node_args(args)
    assert params["seeds"] == (f"{headless['metadata']['name']}.default.svc.cluster.local:4160",)
    assert params["node_name"] == "shoal-0"
    assert params["gossip_keys"]

    (secret,) = by_kind("Secret")
    key_ref = next(e for e in container["env"] if e["name"] == "GOSSIP_KEY")
    ref = key_ref["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]

    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/ping"
    ports = {f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}" for p in container["ports"]}
    assert ports == PORTS
    (pdb,) = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_compose_file_is_a_three_node_cluster() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert len(services) == 3
    seeds = []
    for name, service in services.items():
        params = parse_node_args(service["command"])
        assert params["node_name"] == name
        seeds += params["seeds"]
        assert any(volume.endswith(":/data") for volume in service["volumes"])
    assert seeds == ["shoal-1:4160", "shoal-1:4160"]


def test_dockerfile_is_slim_non_root_with_a_health_check_and_a_volume() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM "))]
    assert re.fullmatch(r"FROM python:3\.1\d-slim", final)
    user = next(line for line in reversed(lines) if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert "/ping" in text[text.index("HEALTHCHECK") :]
    assert 'VOLUME ["/data"]' in lines
    exposed = {p for line in lines if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert exposed == PORTS
    entry = next(line for line in lines if line.startswith("ENTRYPOINT"))
    assert '"shoal", "node"' in entry


def test_the_node_command_rejects_an_unknown_flag() -> None:
    with pytest.raises(click.UsageError):
        parse_node_args(["--no-such-flag"])
