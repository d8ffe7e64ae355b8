"""`migbed up` stopped or killed mid-comparison, for real: a real `migbed up` process (the
images built from this tree, no registry), its services in their containers, its runner in a
one-shot container running a comparison that never ends by itself (orchlab.NEVER_ENDING: a
600 s device setup that switchover-ack waits for).

- SIGTERM to `up` (by PID, as a service manager does): the signal reaches the runner, whose
  `migbed run` cancels the run on the source container's service; `up` exits 143 (the
  runner's code), the record is in results/ (cancelled, the signal named, the guest running
  and intact), the runner container is gone, and the source and target hold no session.
- SIGKILL of `up`: its watchdog sends the runner SIGHUP, so the runner does the same within
  seconds (exit 129, record `interrupted: SIGHUP`) and compose removes it; nothing of that
  `up` (compose, the watchdog) is left.
- `migbed down` then leaves no container, network or volume of the project.

Its own compose project, subnet and Prometheus port: a user's stack is never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from orchlab import NEVER_ENDING, Orchestrator, alive, cmdline, journal

from migbed.env import compose, images

pytestmark = pytest.mark.timeout(1500)

PROJECT = "migbedsig"
NET = "172.30.9"
PROM_PORT = "19091"
RUNNER_GONE_S = 20.0  # after SIGKILL of `up`: the runner's cancel and record take ~1-3 s
ENV = {"MIGBED_NET": NET, "MIGBED_PROMETHEUS_PORT": PROM_PORT, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("scenario") / "never-ending.toml"
    path.write_text(NEVER_ENDING)
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)  # the `up` processes inherit them
    try:
        yield path
    finally:
        down = subprocess.run([sys.executable, "-m", "migbed", "down", "--project-name", PROJECT],
                              capture_output=True, text=True, timeout=300, check=False)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert down.returncode == 0, down.stdout + down.stderr


def up(tmp: Path, scenario: Path, name: str) -> tuple[Orchestrator, Path]:
    out = tmp / "results" / name
    cli = Orchestrator(["up", "--scenario", str(scenario), "--policy", "switchover-ack",
                        "--repeat", "2", "--no-grafana", "--project-name", PROJECT,
                        "--out", str(out)], tmp / name)
    return cli, out


def wait_in_flight(cli: Orchestrator, c: docker.DockerClient) -> str:
    """Images built, stack healthy, the runner's first run in pre-copy: its run id."""
    [run_id] = cli.wait_started(1, timeout=1200)
    assert runners(c), "no runner container while its run is in flight"
    time.sleep(1.5)  # boot, warm-up, setup: waiting for the ACK now
    assert run_id in service_sessions(c, "source"), "the run is not in flight on the source"
    return run_id


def runners(c: docker.DockerClient) -> list[str]:
    return [ct.name for ct in compose.Stack(project=PROJECT).containers(c, "runner")]


def service_sessions(c: docker.DockerClient, service: str) -> list[str]:
    """What the service in its container says (`migbed status`, run inside it)."""
    ct = compose.Stack(project=PROJECT).container(c, service)
    res = ct.exec_run(["migbed", "status", "--json", "127.0.0.1:50051"])
    assert res.exit_code == 0, res.output
    sessions: list[str] = json.loads(res.output)["sessions"]
    return sessions


def assert_cancelled_by(rec: dict[str, Any], run_id: str, name: str) -> None:
    assert rec["run_id"] == run_id and rec["outcome"] == "cancelled", rec["error"]
    assert f"migbed run got {name}" in rec["error"], rec["error"]
    assert rec["labels"]["interrupted"] == name
    assert rec["source_guest_running_after"] and rec["source_integrity_ok"], rec["error"]
    assert rec["source_address"] == "source:50051"


def processes_of(up_pid: int) -> list[str]:
    """Live processes of a `migbed up` that is gone: its compose (its runner's label names
    the pid) and its watchdog (its token argument starts with the pid)."""
    out = []
    for entry in Path("/proc").iterdir():
        argv = cmdline(int(entry.name)) if entry.name.isdigit() else []
        ours = any(a.startswith(f"{compose.RUNNER_LABEL}={up_pid}-") for a in argv) or (
            "migbed.env.runner_watchdog" in argv and argv[-1].startswith(f"{up_pid}-"))
        if ours and alive(int(entry.name)):
            out.append(" ".join(argv))
    return out


def test_sigterm_reaches_the_runner_and_up_exits_with_its_code(
        scenario: Path, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    cli, out = up(tmp_path, scenario, "term")
    try:
        run_id = wait_in_flight(cli, docker_client)
        cli.signal(signal.SIGTERM)
        code = cli.wait(120)
    finally:
        cli.kill()
    assert code == 143, cli.transcript()
    [rec] = journal(out / "results.jsonl")  # the second repeat never started
    assert_cancelled_by(rec, run_id, "SIGTERM")
    assert json.loads((out / "results.json").read_text())[0]["run_id"] == run_id
    assert runners(docker_client) == [], "the runner container outlived `up`"
    assert service_sessions(docker_client, "source") == []
    assert service_sessions(docker_client, "target") == []
    assert "runner exited 143" in cli.stdout()
    assert "Traceback" not in cli.stderr()


def test_a_killed_up_s_runner_is_stopped_by_its_watchdog(
        scenario: Path, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    cli, out = up(tmp_path, scenario, "kill")
    try:
        run_id = wait_in_flight(cli, docker_client)
        cli.signal(signal.SIGKILL)
        killed = time.monotonic()
        cli.wait(10)
        deadline = killed + RUNNER_GONE_S
        while runners(docker_client) and time.monotonic() < deadline:
            time.sleep(0.2)
        took = time.monotonic() - killed
    finally:
        cli.kill()
    assert runners(docker_client) == [], f"the runner still exists {RUNNER_GONE_S:g} s after the SIGKILL"
    print(f"runner container gone {took:.1f} s after `up` was SIGKILLed")
    [rec] = journal(out / "results.jsonl")
    assert_cancelled_by(rec, run_id, "SIGHUP")
    assert "`migbed up` is gone: SIGHUP to its runner" in cli.stderr()
    assert service_sessions(docker_client, "source") == []
    assert service_sessions(docker_client, "target") == []
    # Neither its compose nor its watchdog is left.
    deadline = time.monotonic() + 10
    while processes_of(cli.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(cli.pid) == []


def test_down_leaves_nothing(scenario: Path, docker_client: docker.DockerClient) -> None:
    res = subprocess.run([sys.executable, "-m", "migbed", "down", "--project-name", PROJECT],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    label = {"label": f"{compose.PROJECT_LABEL}={PROJECT}"}
    assert docker_client.containers.list(all=True, filters=label) == []
    assert docker_client.networks.list(filters=label) == []
    assert docker_client.volumes.list(filters=label) == []
    assert images.image_exists(docker_client, images.RUNTIME)  # images stay (down is not rmi)
