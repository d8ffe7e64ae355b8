"""`migbed deploy` without hosts: inventory checks, failure reasons, progress lines, the tc
commands from a scenario, the experiment's name, and the playbooks' syntax."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from migbed.cli.main import main as migbed_main
from migbed.env import ansible, deploy, labcerts, playbook, wheelhouse

ROOT = Path(__file__).resolve().parents[2]


def test_bad_yaml_inventory_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "lab.yml"
    bad.write_text("all:\n  children:\n    source:\n      hosts:\n        a: {ansible_host: x\n")
    with pytest.raises(ansible.DeployError) as e:
        ansible.load_inventory(bad, ROOT)
    msg = str(e.value)
    assert msg.startswith(f"inventory {bad} could not be parsed: YAML parsing failed")
    assert f"(at {bad}:" in msg


def test_inventory_groups_and_missing_ones(tmp_path: Path) -> None:
    inv = ansible.load_inventory(ROOT / "deploy" / "inventory.example.yml", ROOT)
    assert inv.hosts("source") == ["lab-a"]
    assert inv.hosts("target") == ["lab-b"]
    assert inv.hosts("monitor") == ["lab-mon"]
    assert inv.hosts("all") == ["lab-a", "lab-b", "lab-mon"]

    ini = tmp_path / "lab.ini"
    ini.write_text("[source]\nhost-a ansible_host=192.0.2.1\n")
    with pytest.raises(ansible.DeployError, match=r"group 'target' has no hosts"):
        ansible.load_inventory(ini, ROOT)
    with pytest.raises(ansible.DeployError, match=r"no such file"):
        ansible.load_inventory(tmp_path / "missing.yml", ROOT)


def test_failure_reasons() -> None:
    unreachable = {
        "msg": "Task failed: Failed to connect to the host via ssh: lab@192.0.2.1: Permission denied (publickey).",
        "unreachable": True,
    }
    assert playbook.failure_reason(unreachable) == (
        "Failed to connect to the host via ssh: lab@192.0.2.1: Permission denied (publickey)."
    )
    command = {"msg": "non-zero return code", "rc": 2, "stderr": "", "stdout": "a\nb\nboom"}
    assert playbook.failure_reason(command) == "exit 2; a | b | boom"
    loop = {"msg": "", "results": [{"failed": False}, {"failed": True, "msg": "item broke"}]}
    assert playbook.failure_reason(loop) == "item broke"
    assert playbook.failure_reason({}) == "no reason given"


def _event(kind: str, **data: object) -> dict[str, object]:
    return {"event": kind, "event_data": data}


def test_progress_lines_and_failures() -> None:
    out = io.StringIO()
    p = playbook.Progress(out)
    p(_event("playbook_on_play_start", play="Install migbed"))
    p(_event("playbook_on_task_start", task="Copy the wheelhouse", role="install"))
    p(_event("runner_on_ok", host="a", task="Copy the wheelhouse", role="install", res={"changed": True}))
    p(_event("runner_on_ok", host="b", task="Copy the wheelhouse", role="install", res={}))
    p(_event("runner_on_skipped", host="c", task="Copy the wheelhouse", role="install"))
    p(_event("runner_on_unreachable", host="c", task="Gathering Facts", res={"msg": "No route to host"}))
    p(_event("runner_on_failed", host="d", task="x", ignore_errors=True, res={"msg": "fine"}))
    p(_event("playbook_on_stats", ok={"a": 3}, changed={"a": 1}, dark={"c": 1}))
    lines = out.getvalue().splitlines()
    assert lines[0] == "PLAY Install migbed"
    assert lines[1].split() == ["a", "changed", "install", ":", "Copy", "the", "wheelhouse"]
    assert lines[2].split()[:2] == ["b", "ok"]
    assert not any(line.split()[:2] == ["c", "skipped"] for line in lines)  # only with -v
    assert [str(f) for f in p.failures] == ["host 'c' unreachable at task 'Gathering Facts': No route to host"]
    assert p.stats == {"a": {"ok": 3, "changed": 1}, "c": {"dark": 1}}


def test_tc_commands_from_the_scenario(tmp_path: Path) -> None:
    base = (ROOT / "migbed" / "scenarios" / "tiny.toml").read_text()
    shaped = tmp_path / "shaped.toml"
    shaped.write_text(base + '\n[link]\nrate = "400Mbit"\n')
    [argv] = deploy.tc_commands(shaped)
    assert argv[:7] == ["tc", "qdisc", "replace", "dev", "@IFACE@", "root", "tbf"]
    assert argv[argv.index("rate") + 1] == "400000000bit"
    assert deploy.tc_commands(ROOT / "migbed" / "scenarios" / "tiny.toml") == []
    broken = tmp_path / "broken.toml"
    broken.write_text(base + '\n[link]\nrate = "fast"\n')
    with pytest.raises(ansible.DeployError, match=r"scenario .*broken.toml: link.rate"):
        deploy.tc_commands(broken)


def test_experiment_id_follows_its_inputs(tmp_path: Path) -> None:
    sc = tmp_path / "s.toml"
    sc.write_text("x")
    one = deploy.experiment_id(sc, ["legacy"], 1, tmp_path / "o", ["a", "b"], "w")
    assert one == deploy.experiment_id(sc, ["legacy"], 1, tmp_path / "o", ["a", "b"], "w")
    assert one.startswith("s-")
    assert one != deploy.experiment_id(sc, ["legacy"], 2, tmp_path / "o", ["a", "b"], "w")
    assert one != deploy.experiment_id(sc, ["legacy"], 1, tmp_path / "o", ["a", "b"], "w2")
    sc.write_text("y")
    assert one != deploy.experiment_id(sc, ["legacy"], 1, tmp_path / "o", ["a", "b"], "w")


def test_wheelhouse_digest(tmp_path: Path) -> None:
    (tmp_path / "deps").mkdir()
    (tmp_path / "project").mkdir()
    (tmp_path / "runtime.txt").write_text("x==1\n")
    (tmp_path / "deps" / "x-1-py3-none-any.whl").write_bytes(b"x")
    with pytest.raises(ansible.DeployError, match="exactly one"):
        wheelhouse.wheelhouse_digest(tmp_path)
    (tmp_path / "project" / "migbed-0.1.0-py3-none-any.whl").write_bytes(b"m")
    d = wheelhouse.wheelhouse_digest(tmp_path)
    assert d == wheelhouse.wheelhouse_digest(tmp_path)
    (tmp_path / "project" / "migbed-0.1.0-py3-none-any.whl").write_bytes(b"m2")
    assert d != wheelhouse.wheelhouse_digest(tmp_path)


@pytest.mark.parametrize("playbook", ["install", "experiment", "teardown"])
def test_playbook_syntax(playbook: str) -> None:
    bindir = str(Path(sys.executable).parent)
    env = os.environ | {
        "ANSIBLE_CONFIG": str(ROOT / "deploy" / "ansible.cfg"),
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
    }
    proc = subprocess.run(
        [
            os.path.join(bindir, "ansible-playbook"),
            "--syntax-check",
            "-i",
            str(ROOT / "deploy" / "inventory.example.yml"),
            str(ROOT / "deploy" / f"{playbook}.yml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_unknown_policy_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = str(ROOT / "deploy" / "inventory.example.yml")
    scenario = str(ROOT / "migbed" / "scenarios" / "tiny.toml")
    with pytest.raises(SystemExit) as exit_:  # argparse: the same --policy choices as run and up
        migbed_main(["deploy", "-i", inventory, "--scenario", scenario, "--policy", "bogus", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "argument --policy: invalid choice: 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "ansible").exists()


def test_lab_certs_cover_the_hosts_and_are_reused(tmp_path: Path) -> None:
    inv = ansible.Inventory(
        {"source": ["lab-a"], "target": ["lab-b", "bad_name"], "monitor": ["lab-mon"]},
        {
            "lab-a": {"ansible_host": "192.0.2.10", "migbed_lab_address": "198.51.100.10"},
            "lab-b": {"ansible_host": "192.0.2.11", "migbed_lab_address": "{{ ansible_host }}"},
        },
    )
    hosts = labcerts.tls_hosts(inv, {})
    assert hosts == ["lab-a", "192.0.2.10", "198.51.100.10", "lab-b", "192.0.2.11"]
    folder = tmp_path / "tls"
    out = io.StringIO()
    assert labcerts.lab_certs(folder, hosts, out)
    assert "none yet" in out.getvalue()
    ca = (folder / "ca.pem").read_bytes()
    assert not labcerts.lab_certs(folder, hosts, out)  # reused: the same CA
    assert (folder / "ca.pem").read_bytes() == ca
    assert (folder / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    assert labcerts.lab_certs(folder, [*hosts, "192.0.2.99"], out)  # a new host: a new CA
    assert "new hosts 192.0.2.99" in out.getvalue()
    assert (folder / "ca.pem").read_bytes() != ca
    assert labcerts.tls_hosts(inv, {"migbed_lab_address": "10.0.0.1"})[2] == "10.0.0.1"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """migbed@.service as the service role renders it passes `systemd-analyze verify`
    (instance migbed@source); the unit's behaviour on a systemd host is tested in
    tests/deploy/test_deploy_systemd.py."""
    import shutil

    import jinja2

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian: systemd) is needed to check the unit"
    root = tmp_path / "opt"
    (root / "venv" / "bin").mkdir(parents=True)
    exe = root / "venv" / "bin" / "migbed"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc" / "source.env").write_text("MIGBED_SERVE_ARGS=--listen 0.0.0.0:50051\n")
    template = Path(__file__).resolve().parents[2] / "deploy/roles/service/templates/migbed@.service.j2"
    text = jinja2.Template(template.read_text()).render(
        ansible_managed="managed by Ansible", migbed_root=str(root), ansible_facts={"user_id": "root"}
    )
    (tmp_path / "migbed@.service").write_text(text)
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "migbed@source.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    assert "Restart=on-failure" in text and "WantedBy=multi-user.target" in text


def test_diff_lines_of_a_changed_file_and_a_prepared_diff() -> None:
    """--diff: Ansible's before/after of a template becomes a unified diff; a module's own
    prepared diff is shown as it is; an unchanged or missing diff shows nothing."""
    lines = playbook.diff_lines(
        {"before": "a\nb\n", "after": "a\nc\n", "before_header": "/etc/x", "after_header": "x.j2"}
    )
    assert lines[:2] == ["--- /etc/x", "+++ x.j2"]
    assert "-b" in lines and "+c" in lines
    assert playbook.diff_lines([{"prepared": "one\ntwo"}]) == ["one", "two"]
    assert playbook.diff_lines({"before": "same", "after": "same"}) == []
    assert playbook.diff_lines(None) == []
