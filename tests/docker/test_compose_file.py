"""compose.yaml as the installed compose tool reads it (`config`) and as the Compose
Specification's JSON schema defines it: the contract of the stack."""

from __future__ import annotations

import json
import os
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from migbed.env import compose

LONG_LIVED = ("source", "target", "prometheus", "grafana")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    try:
        cmd = compose.compose_command()
    except compose.StackError as e:
        pytest.fail(str(e))  # the stack cannot work without it: never a skip
    stack = compose.Stack(project="migbedconfig", profiles=["grafana", "runner"], cmd=cmd)
    res = subprocess.run(stack.argv("config"), env=stack.full_env(), capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    parsed: dict[str, Any] = yaml.safe_load(res.stdout)
    return parsed


def test_valid_against_the_compose_spec_schema() -> None:
    """The current Compose Specification schema (Compose v2), vendored by check-jsonschema;
    docker-compose 1.29 validates against its own copy in `config` (the fixture above)."""
    schema_file = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(schema_file.read_text())
    doc = yaml.safe_load(compose.COMPOSE_FILE.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_services(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {"source", "target", "prometheus", "grafana", "runner"}
    assert config["services"]["grafana"]["profiles"] == ["grafana"]
    assert config["services"]["runner"]["profiles"] == ["runner"]


def test_never_pulls(config: dict[str, Any]) -> None:
    for name, svc in config["services"].items():
        assert svc["pull_policy"] == "never", name
    for name in ("source", "target", "prometheus", "runner"):
        assert config["services"][name]["build"]["context"], name


def test_plain_compose_without_images_says_what_to_do(tmp_path: Path) -> None:
    """No MIGBED_*_IMAGE and no .env naming the images (an empty one stands for the .env that
    `migbed images` has not written yet): compose stops at once, before pulling anything,
    and names the command that builds the images."""
    cmd = compose.compose_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGBED_")}
    empty = tmp_path / "empty.env"
    empty.write_text("")
    argv = [*cmd, "-f", str(compose.COMPOSE_FILE), "--env-file", str(empty), "-p", "migbednoimages",
            "up", "-d", "--no-build"]
    res = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, check=False, timeout=60)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "MIGBED_SOURCE_IMAGE is unset" in out, out
    assert "bin/migbed images" in out and "never pulled" in out and "docker compose up" in out, out
    assert "Pulling" not in out, out


def test_hardening_and_restart(config: dict[str, Any]) -> None:
    for name, svc in config["services"].items():
        assert svc["cap_drop"] == ["ALL"], name
        # The source's tc runs via `docker exec -u root`, which no-new-privileges would
        # leave without NET_ADMIN (compose.yaml says why).
        assert ("no-new-privileges:true" in svc.get("security_opt", [])) == (name != "source"), name
        want = "no" if name == "runner" else "unless-stopped"
        assert str(svc["restart"]) == want, name


def test_fixed_distinct_addresses_on_own_network(config: dict[str, Any]) -> None:
    (subnet,) = [c["subnet"] for c in config["networks"]["migbed"]["ipam"]["config"]]
    assert subnet == "172.30.0.0/24"
    addr = {s: config["services"][s]["networks"]["migbed"]["ipv4_address"] for s in ("source", "target")}
    assert addr == {"source": "172.30.0.10", "target": "172.30.0.11"}


def test_only_the_source_may_shape(config: dict[str, Any]) -> None:
    assert config["services"]["source"]["cap_add"] == ["NET_ADMIN"]
    for name in ("target", "runner", "prometheus", "grafana"):
        assert not config["services"][name].get("cap_add"), name


def test_health_checks_and_dependencies(config: dict[str, Any]) -> None:
    for name in LONG_LIVED:
        assert config["services"][name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in ("source", "target"):
        test = config["services"][name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "migbed", "health"], test

    def conditions(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in config["services"][name]["depends_on"].items()}

    both = {"source": "service_healthy", "target": "service_healthy"}
    assert conditions("runner") == both
    assert conditions("prometheus") == both
    assert conditions("grafana") == {"prometheus": "service_healthy"}
    command = " ".join(config["services"]["runner"]["command"])
    assert "migbed run --source source:50051 --target target:50051" in command
    assert "/results/" in command


def test_mounts_and_named_volumes(config: dict[str, Any]) -> None:
    def mounts(service: str) -> dict[str, str]:
        vols = config["services"][service]["volumes"]
        # v1 prints "src:dst:mode" strings, v2 prints mappings
        pairs = [(v["target"], v["source"]) if isinstance(v, dict) else tuple(v.split(":")[1::-1]) for v in vols]
        return dict(pairs)

    assert "/etc/prometheus/prometheus.yml" in mounts("prometheus")
    assert mounts("prometheus")["/prometheus"] == "prometheus-data"
    assert mounts("grafana")["/var/lib/grafana"] == "grafana-data"
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= set(mounts("grafana"))
    assert set(mounts("runner")) == {"/results"}  # scenario files are mounted per run
    assert set(config["volumes"]) == {"prometheus-data", "grafana-data"}


def test_plain_compose_up_works_once_the_images_exist(image_set: Any, docker_client: Any) -> None:
    """After the image build (which writes .env beside compose.yaml), `docker compose up`
    from the checkout, with no migbed variable set, starts the stack: source and target
    become healthy. Its own project and subnet (MIGBED_NET), so no other stack is touched."""
    from migbed.env import images

    assert images.COMPOSE_ENV_FILE.is_file(), "the image build wrote no .env beside compose.yaml"
    cmd = compose.compose_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGBED_")}
    env["MIGBED_NET"] = "172.30.9"  # only the subnet differs from a user's stack
    root = compose.COMPOSE_FILE.parent
    base = [*cmd, "-p", "migbedplain"]
    try:
        up = subprocess.run([*base, "up", "-d", "source", "target"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        compose.wait_healthy(compose.Stack(project="migbedplain"), docker_client,
                             ["source", "target"], compose.HEALTH_TIMEOUT_S)
    finally:
        subprocess.run([*base, "down", "--volumes", "--timeout", "5"], cwd=root, env=env,
                       capture_output=True, timeout=120, check=False)
