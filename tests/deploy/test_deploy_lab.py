"""`migbed deploy` against lab hosts over real SSH: install, migrate, idempotence, teardown,
and the errors a user meets first (unreachable host, wrong key, bad inventory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from deploylab import ROOT, Lab, run_deploy

from migbed.measure.record import load_results

HOSTS = ("lab-src", "lab-tgt", "lab-mon")


def _scenario(tmp: Path) -> Path:
    """The built-in tiny scenario with a shaped link: a migration of about a second."""
    text = (ROOT / "migbed" / "scenarios" / "tiny.toml").read_text()
    path = tmp / "tiny-shaped.toml"
    path.write_text(text + '\n[link]\nrate = "400Mbit"\n')
    return path


def _health(address: str, *args: str) -> int:
    """`migbed health ADDRESS ARGS` from the control machine: its exit status."""
    argv = [sys.executable, "-m", "migbed.cli.main", "health", address, "--timeout", "5", *args]
    env = {k: v for k, v in os.environ.items() if k != "MIGBED_TLS_DIR"}
    return subprocess.run(argv, capture_output=True, cwd=ROOT, env=env, check=False, timeout=60).returncode


def _prometheus_targets(address: str) -> dict[str, str]:
    """job -> health of the monitor host's Prometheus targets, once both services are up."""
    url = f"http://{address}:9090/api/v1/targets"
    health: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data = json.load(resp)
        health = {t["labels"]["job"]: t["health"] for t in data["data"]["activeTargets"]}
        if health.get("migbed-source") == "up" and health.get("migbed-target") == "up":
            break
        time.sleep(1)
    return health


def _check_mode_on_fresh_hosts_changes_nothing(lab: Lab, inventory: Path, wheelhouse: Path, out: Path,
                                               before: dict[str, dict[str, str]]) -> None:
    """Check mode on fresh hosts: every task says what it would do, nothing changes."""
    check = run_deploy(inventory, out, "--wheelhouse", str(wheelhouse), "--check", "--diff")
    assert check.rc == 0, check.stderr
    assert check.summary["check"] is True
    assert check.changed() > 0, check.stdout  # a fresh host needs everything
    assert "would make" in check.stdout
    assert "+++ " in check.stdout  # --diff: the files' contents it would write
    for host in HOSTS:
        # Ansible itself makes its remote temporary folder (~/.ansible/tmp) on any run, check
        # mode included; teardown removes it. Nothing else may differ.
        after = lab.state(host)
        after["home"] = after["home"].replace(".ansible\n", "", 1)
        assert after == before[host], host


def _first_deploy_installs_and_migrates(lab: Lab, inventory: Path, out: Path, experiment: list[str]) -> None:
    """Install on all three hosts, start the services and Prometheus, run the experiment
    from the monitor host: source on one host, target on another."""
    first = run_deploy(inventory, out, *experiment)
    assert first.rc == 0, first.stderr
    assert first.changed() > 0
    for host in HOSTS:
        assert f"{host:<16} changed" in first.stdout  # progress shown per host and task
    records = load_results(str(out / "results.json"))
    assert sorted(r.policy for r in records) == ["legacy", "switchover-ack"]
    for r in records:
        assert r.outcome == "completed", r.error
        assert r.verified, r.run_id
        assert r.source_address == f"{lab.addresses['lab-src']}:50051"
        assert r.target_address == f"{lab.addresses['lab-tgt']}:50051"
    assert "results: 2 runs, 2 verified" in first.stdout
    assert (out / "migbed-run.log").is_file()
    # Each playbook run's ansible-runner data is kept beside the results.
    pdds = sorted((out / "ansible").iterdir())
    assert [p.name.split("-", 1)[1] for p in pdds] == ["install", "experiment"]
    for pdd in pdds:
        assert (pdd / "artifacts" / "run" / "stdout").is_file()
        assert (pdd / "artifacts" / "run" / "rc").read_text().strip() == "0"


def _link_is_shaped_from_the_scenario(lab: Lab) -> None:
    """The link is shaped on the source host's lab interface, from the scenario's [link]."""
    code, qdisc = lab.sh("lab-src", "tc qdisc show dev eth0 root")
    assert code == 0 and "tbf" in qdisc and "rate 400Mbit" in qdisc, qdisc


def _services_answer_only_mutual_tls(lab: Lab, tls: Path) -> None:
    """Mutual TLS is on by default: both services answer only a client of the lab CA, which
    stays on the control machine with its key; the hosts hold ca.pem and their own pairs."""
    assert (tls / "ca-key.pem").is_file()
    for host in ("lab-src", "lab-tgt"):
        address = f"{lab.addresses[host]}:50051"
        assert _health(address, "--tls-dir", str(tls)) == 0, host
        assert _health(address) != 0, f"{host} answers plaintext gRPC"
    expect = {
        "lab-src": "ca.pem client-key.pem client.pem source-key.pem source.pem",
        "lab-tgt": "ca.pem client-key.pem client.pem target-key.pem target.pem",
        "lab-mon": "ca.pem client-key.pem client.pem",
    }
    for host, files in expect.items():
        code, listing = lab.sh(host, "cd /opt/migbed/tls && ls | sort | xargs && stat -c '%a %n' *-key.pem")
        assert code == 0, listing
        lines = listing.strip().splitlines()
        assert lines[0] == files, (host, listing)
        assert all(line.startswith("600 ") for line in lines[1:]), (host, listing)


def _monitor_runs_one_prometheus_scraping_both(lab: Lab) -> None:
    """Debian's packaged Prometheus on the monitor host (the only one: no second server),
    run by its init script here (no systemd), scrapes both services with migbed's config."""
    health = _prometheus_targets(lab.addresses["lab-mon"])
    assert health.get("migbed-source") == "up" and health.get("migbed-target") == "up", health
    code, procs = lab.sh("lab-mon", "ps -eo user:20=,args= | grep '[/]usr/bin/prometheus'")
    assert code == 0 and len(procs.strip().splitlines()) == 1, procs
    assert procs.split()[0] == "prometheus", procs
    code, conf = lab.sh("lab-mon", "cat /etc/prometheus/prometheus.yml")
    assert "migbed-source" in conf and f"{lab.addresses['lab-src']}:9101" in conf, conf


def _services_run_under_the_pidfile_helper(lab: Lab) -> None:
    """Without systemd the services run under the pidfile helper."""
    _, pids = lab.sh("lab-src", "ls /opt/migbed/run")  # a failed ls fails the assert below
    assert "migbed-source.pid" in pids, pids


def _second_deploy_changes_nothing(lab: Lab, inventory: Path, out: Path, experiment: list[str],
                                   wheelhouse: Path) -> None:
    """The same deploy again changes nothing, on any host, and keeps the results; check mode
    on the deployed hosts has nothing to do and does nothing."""
    results_before = (out / "results.json").read_bytes()
    again = run_deploy(inventory, out, *experiment)
    assert again.rc == 0, again.stderr
    assert again.changed() == 0, again.stdout
    for run in again.summary["playbooks"]:
        for host, stats in run["stats"].items():
            assert stats.get("changed", 0) == 0, (run["playbook"], host, stats)
    assert (out / "results.json").read_bytes() == results_before

    deployed = {host: lab.state(host) for host in HOSTS}
    check = run_deploy(inventory, out, "--wheelhouse", str(wheelhouse), "--check", "--diff")
    assert check.rc == 0, check.stderr
    assert check.changed() == 0, check.stdout
    for host in HOSTS:
        assert lab.state(host) == deployed[host], host


def _teardown_restores_the_hosts(lab: Lab, inventory: Path, out: Path,
                                 before: dict[str, dict[str, str]]) -> None:
    """Teardown stops everything and leaves the hosts as they were; twice is harmless."""
    down = run_deploy(inventory, out, "--teardown")
    assert down.rc == 0, down.stderr
    for host in HOSTS:
        assert lab.state(host) == before[host], host
    down_again = run_deploy(inventory, out, "--teardown")
    assert down_again.rc == 0, down_again.stderr
    assert down_again.changed() == 0, down_again.stdout


@pytest.mark.timeout(1800)
def test_deploy_migrate_idempotent_teardown(lab: Lab, wheelhouse: Path, tmp_path: Path) -> None:
    inventory = lab.inventory()
    out = tmp_path / "out"
    scenario = _scenario(tmp_path)
    experiment = ["--wheelhouse", str(wheelhouse), "--scenario", str(scenario)]
    experiment += ["--policy", "legacy", "--policy", "switchover-ack", "--repeat", "1"]
    before = {host: lab.state(host) for host in HOSTS}

    _check_mode_on_fresh_hosts_changes_nothing(lab, inventory, wheelhouse, tmp_path / "check", before)
    _first_deploy_installs_and_migrates(lab, inventory, out, experiment)
    _link_is_shaped_from_the_scenario(lab)
    _services_answer_only_mutual_tls(lab, out / "tls")
    _monitor_runs_one_prometheus_scraping_both(lab)
    _services_run_under_the_pidfile_helper(lab)
    _second_deploy_changes_nothing(lab, inventory, out, experiment, wheelhouse)
    _teardown_restores_the_hosts(lab, inventory, out, before)


def test_unreachable_host_is_named(lab: Lab, tmp_path: Path) -> None:
    inventory = lab.inventory("unreachable.yml", override={"lab-tgt": lab.unused_address()})
    res = run_deploy(inventory, tmp_path / "out", timeout=300)
    assert res.rc == 1
    assert "host 'lab-tgt' unreachable at task 'Gathering Facts'" in res.stderr, res.stderr
    assert lab.unused_address() in res.stderr  # ssh's own reason, with the address it tried
    assert "artifacts in" in res.stderr


def test_wrong_key_is_named(lab: Lab, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    inventory = lab.inventory("wrong-key.yml", key=wrong)
    res = run_deploy(inventory, tmp_path / "out", timeout=300)
    assert res.rc == 1
    for host in HOSTS:
        assert f"host '{host}' unreachable" in res.stderr, res.stderr
    assert "Permission denied (publickey)" in res.stderr


def test_bad_inventory_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  children:\n    source:\n      hosts:\n        lab-src: {ansible_host: x\n")
    res = run_deploy(bad, tmp_path / "out", timeout=120)
    assert res.rc == 2
    assert f"inventory {bad} could not be parsed" in res.stderr, res.stderr
    assert "YAML" in res.stderr

    no_target = tmp_path / "no-target.yml"
    no_target.write_text("all:\n  children:\n    source:\n      hosts:\n        lab-src:\n")
    res = run_deploy(no_target, tmp_path / "out", timeout=120)
    assert res.rc == 2
    assert f"inventory {no_target}: group 'target' has no hosts" in res.stderr, res.stderr
