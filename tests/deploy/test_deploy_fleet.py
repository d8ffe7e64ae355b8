"""`migbed deploy --evacuate` on a lab of two source hosts, two target hosts and a monitor, over
real SSH: services on every host, six guests dealt over both sources and placed on both targets
under the in-flight limits, every guest verified, every record in one folder on the control
machine; Prometheus labels each service's series with its host; a target host lost mid-plan
fails only the guests placed on it and leaves each of them running on its source; deploying
again restores it, evacuates, then tears everything down.

The tests share one lab and run in file order (the second loses lab-tgt2, the third brings
it back)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from deploylab import ROOT, Deployed, Lab, run_deploy, start_lab

from migbed.fleet.evacuation import Evacuation, GuestRun
from migbed.fleet.lab import lab_endpoints
from migbed.fleet.planner import EvacuationPlan, Interval, Limits, max_in_flight, spread_guests
from migbed.fleet.report import write_fleet
from migbed.measure.record import load_results

SOURCES = ["lab-src1", "lab-src2"]
TARGETS = ["lab-tgt1", "lab-tgt2"]
MONITOR = ["lab-mon"]
PER_SOURCE, PER_CLUSTER, GUESTS = 2, 3, 6


@pytest.fixture(scope="module")
def fleet_lab(
    docker_client: docker.DockerClient, labhost_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    hosts = (*SOURCES, *TARGETS, *MONITOR)
    with start_lab(docker_client, labhost_image, tmp_path_factory.mktemp("fleetlab"), hosts) as lab:
        yield lab


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny scenario (a device included) on a shaped link: about a second a guest."""
    path = tmp_path_factory.mktemp("scenario") / "tiny-shaped.toml"
    path.write_text((ROOT / "migbed" / "scenarios" / "tiny.toml").read_text() + '\n[link]\nrate = "400Mbit"\n')
    return path


@pytest.fixture(scope="module")
def evacuated(
    fleet_lab: Lab, wheelhouse: Path, scenario: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Deployed, Path]:
    """One deploy: install on all five hosts, then the evacuation from this machine."""
    out = tmp_path_factory.mktemp("fleet-out")
    inventory = fleet_lab.fleet_inventory({"source": SOURCES, "target": TARGETS, "monitor": MONITOR})
    res = run_deploy(
        inventory, out, "--wheelhouse", str(wheelhouse), "--evacuate", "--scenario", str(scenario),
        "--policy", "switchover-ack", "--guests", str(GUESTS), "--per-source", str(PER_SOURCE),
        "--per-cluster", str(PER_CLUSTER), "--no-progress", timeout=1500,
    )
    return res, out


@pytest.mark.timeout(1800)
def test_evacuation_across_lab_hosts(fleet_lab: Lab, evacuated: tuple[Deployed, Path]) -> None:
    res, out = evacuated
    assert res.rc == 0, res.stderr + res.stdout[-3000:]
    # Services on every host of each group, started by the same install.
    for host in SOURCES + TARGETS:
        role = "source" if host in SOURCES else "target"
        code, pids = fleet_lab.sh(host, "ls /opt/migbed/run")
        assert code == 0 and f"migbed-{role}.pid" in pids, (host, pids)
    # Every view in one folder on the control machine.
    for name in ("fleet.json", "fleet.csv", "results.json", "gantt.png"):
        assert (out / name).is_file(), name
    [fleet] = json.loads((out / "fleet.json").read_text())
    guests = fleet["guests"]
    assert len(guests) == GUESTS and not fleet["not_started"] and not fleet["lost_targets"]
    assert all(g["outcome"] == "completed" and g["verified"] for g in guests), guests
    assert {g["source_host"] for g in guests} == set(SOURCES)
    assert {g["target_host"] for g in guests} == set(TARGETS)
    # The limits, checked from the timestamps the records came back with (runner's clock).
    peak, per_source = max_in_flight(Interval(g["source_host"], g["start_ms"], g["end_ms"]) for g in guests)
    assert peak <= PER_CLUSTER and max(per_source.values()) <= PER_SOURCE, (peak, per_source)
    assert peak >= 2  # guests did run side by side: the limits were exercised
    # The clock offset of every host pair that migrated, as measured by its runs.
    pairs = {f"{g['source_host']} -> {g['target_host']}" for g in guests}
    assert set(fleet["clock_offsets"]) == pairs
    # Every record, from every source host, tagged with its hosts.
    records = load_results(str(out / "results.json"))
    assert len(records) == GUESTS
    addresses = {h: f"{fleet_lab.addresses[h]}:50051" for h in SOURCES + TARGETS}
    for r in records:
        assert r.verified and r.outcome == "completed", r.error
        assert r.source_address == addresses[r.labels["source_host"]]
        assert r.target_address == addresses[r.labels["target_host"]]
    assert {r.labels["source_host"] for r in records} == set(SOURCES)
    assert f"6/{GUESTS}" in res.stdout  # the table: verified / guests
    # Prometheus on the monitor host: each service's series carry its host's name.
    hosts = _prometheus_hosts(fleet_lab.addresses["lab-mon"])
    assert hosts == {"migbed-source": set(SOURCES), "migbed-target": set(TARGETS)}, hosts


def _prometheus_hosts(address: str) -> dict[str, set[str]]:
    """job -> the `host` labels of its `up` series that are up."""
    url = f"http://{address}:9090/api/v1/query?" + urllib.parse.urlencode({"query": "up == 1"})
    found: dict[str, set[str]] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data = json.load(resp)["data"]["result"]
        found = {}
        for s in data:
            if s["metric"]["job"].startswith("migbed-"):
                found.setdefault(s["metric"]["job"], set()).add(s["metric"].get("host", ""))
        if len(found.get("migbed-source", ())) == 2 and len(found.get("migbed-target", ())) == 2:
            break
        time.sleep(1)
    return found


@pytest.mark.timeout(900)
def test_a_target_host_lost_mid_plan_fails_only_its_guests(
    fleet_lab: Lab, evacuated: tuple[Deployed, Path], scenario: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deployed services, driven by the same runner `migbed deploy --evacuate` uses; after
    the first guest is done, lab-tgt2's service is killed (SIGKILL, as a crashed host)."""
    _, out = evacuated
    monkeypatch.setenv("MIGBED_TLS_DIR", str(out / "tls"))
    hostvars = {h: {"ansible_host": fleet_lab.addresses[h]} for h in SOURCES + TARGETS}
    endpoints = lab_endpoints(SOURCES, TARGETS, hostvars, 50051)
    toml = scenario.read_text()
    fleet = spread_guests("tiny-shaped", toml, GUESTS, SOURCES)
    killed: list[str] = []

    def on_done(g: GuestRun) -> None:
        if not killed:
            code, text = fleet_lab.sh("lab-tgt2", "kill -9 $(cat /opt/migbed/run/migbed-target.pid)")
            assert code == 0, text
            killed.append(g.guest)

    plan = EvacuationPlan(fleet, TARGETS, Limits(PER_SOURCE, PER_CLUSTER))
    result = Evacuation(plan, endpoints, {"tiny-shaped": toml}, "switchover-ack",
                        on_guest_done=on_done).run("first-come")
    where = {g.guest: (g.outcome, g.target_host) for g in result.guests}
    failed = [g for g in result.guests if g.outcome != "completed"]
    assert failed, f"losing lab-tgt2 failed no guest: {where}"
    assert all(g.target_host == "lab-tgt2" for g in failed), where
    assert result.lost_targets == ["lab-tgt2"]
    assert not result.not_started and len(result.guests) == GUESTS  # went on with lab-tgt1
    assert all(g.verified for g in result.guests if g.outcome == "completed"), where
    for rec in result.records:
        if rec.outcome != "completed":
            # Each source guest of a failed migration keeps running, intact, on its source.
            assert rec.source_guest_running_after and rec.source_integrity_ok, rec.error
    late = [g for g in result.guests if g.start_ms > min(f.end_ms for f in failed)]
    assert all(g.target_host == "lab-tgt1" for g in late), where
    # The results say which guest ended where.
    write_fleet([result], tmp_path)
    [saved] = json.loads((tmp_path / "fleet.json").read_text())
    assert {g["guest"]: (g["outcome"], g["target_host"]) for g in saved["guests"]} == where
    assert saved["lost_targets"] == ["lab-tgt2"]


@pytest.mark.timeout(900)
def test_deploy_again_evacuates_then_tears_down(
    fleet_lab: Lab, evacuated: tuple[Deployed, Path], wheelhouse: Path, scenario: Path, tmp_path: Path
) -> None:
    """Runs after the target host was lost: deploying again brings its service back, the
    evacuation runs before the teardown (the services are still there), and the teardown
    leaves no migbed on any host."""
    _, first_out = evacuated
    inventory = fleet_lab.fleet_inventory({"source": SOURCES, "target": TARGETS, "monitor": MONITOR})
    out = tmp_path / "again"
    out.mkdir()
    # The same lab CA: the hosts keep their certificates.
    (out / "tls").symlink_to(first_out / "tls", target_is_directory=True)
    res = run_deploy(
        inventory, out, "--wheelhouse", str(wheelhouse), "--evacuate", "--scenario", str(scenario),
        "--policy", "legacy", "--guests", "4", "--no-progress", "--teardown", timeout=900,
    )
    assert res.rc == 0, res.stderr + res.stdout[-3000:]
    assert [p["playbook"] for p in res.summary["playbooks"]] == ["install.yml", "shape.yml", "teardown.yml"]
    [fleet] = json.loads((out / "fleet.json").read_text())
    assert [g["outcome"] for g in fleet["guests"]] == ["completed"] * 4
    assert all(g["verified"] for g in fleet["guests"])
    assert "lab-tgt2" in {g["target_host"] for g in fleet["guests"]}  # its service is back
    for host in SOURCES + TARGETS:
        listing = fleet_lab.sh(host, "ls -A /opt")[1]
        assert "migbed" not in listing, (host, listing)
