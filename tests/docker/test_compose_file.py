"""compose.yaml as the installed compose tool reads it (`config`): the contract of the stack."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from migbed.env import compose


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    try:
        cmd = compose.compose_command()
    except compose.StackError as e:
        pytest.fail(str(e))  # the stack cannot work without it: never a skip
    stack = compose.Stack(project="migbedconfig", profiles=["grafana"], cmd=cmd)
    res = subprocess.run(stack.argv("config"), env=stack.full_env(), capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    parsed: dict[str, Any] = yaml.safe_load(res.stdout)
    return parsed


def test_services(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {"source", "target", "prometheus", "grafana", "runner"}
    assert config["services"]["grafana"]["profiles"] == ["grafana"]


def test_fixed_distinct_addresses_on_own_network(config: dict[str, Any]) -> None:
    (subnet,) = [c["subnet"] for c in config["networks"]["migbed"]["ipam"]["config"]]
    assert subnet == "172.30.0.0/24"
    addr = {s: config["services"][s]["networks"]["migbed"]["ipv4_address"] for s in ("source", "target")}
    assert addr == {"source": "172.30.0.10", "target": "172.30.0.11"}


def test_only_the_source_may_shape(config: dict[str, Any]) -> None:
    assert config["services"]["source"]["cap_add"] == ["NET_ADMIN"]
    for name in ("target", "runner", "prometheus"):
        assert not config["services"][name].get("cap_add"), name


def test_health_checks_and_runner_waits_for_them(config: dict[str, Any]) -> None:
    for name in ("source", "target"):
        test = config["services"][name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "migbed", "health"], test
    deps = config["services"]["runner"]["depends_on"]
    assert {k: v["condition"] for k, v in deps.items()} == {
        "source": "service_healthy",
        "target": "service_healthy",
    }
    command = " ".join(config["services"]["runner"]["command"])
    assert "migbed run --source source:50051 --target target:50051" in command
    assert "/results/" in command


def test_mounts(config: dict[str, Any]) -> None:
    def targets(service: str) -> set[str]:
        vols = config["services"][service]["volumes"]
        # v1 prints "src:dst:mode" strings, v2 prints mappings
        return {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in vols}

    assert "/etc/prometheus/prometheus.yml" in targets("prometheus")
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= targets("grafana")
    assert "/results" in targets("runner")
