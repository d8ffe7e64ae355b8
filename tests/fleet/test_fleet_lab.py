"""The lab side of an evacuation, without hosts: where the runner dials each host, how guests are
dealt over the sources, the per-pair clock summary, and `migbed deploy --evacuate`'s bad input
refused before anything is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from migbed.core.scenario import builtin_scenario_text
from migbed.fleet.evacuation import EvacuationResult, GuestRun
from migbed.fleet.lab import lab_endpoints
from migbed.fleet.planner import Limits, PlanError, spread_guests

ROOT = Path(__file__).resolve().parents[2]


def test_endpoints_control_at_ssh_address_targets_at_lab_address() -> None:
    hostvars = {
        "a": {"ansible_host": "192.0.2.10"},
        "b": {"ansible_host": "192.0.2.11", "migbed_lab_address": "198.51.100.11"},
        "c": {},
    }
    ep = lab_endpoints(["a"], ["b", "c"], hostvars, 50051)
    assert ep.sources == {"a": "192.0.2.10:50051"}
    assert ep.targets == {"b": "198.51.100.11:50051", "c": "c:50051"}
    assert ep.probes == {"b": "192.0.2.11:50051", "c": "c:50051"}
    # -e migbed_lab_address wins over the inventory, as in Ansible.
    assert lab_endpoints(["a"], ["b"], hostvars, 7, "10.1.1.1").targets == {"b": "10.1.1.1:7"}


def test_a_templated_address_is_refused_by_name() -> None:
    hostvars = {"b": {"migbed_lab_address": "{{ ansible_default_ipv4.address }}"}}
    with pytest.raises(PlanError, match="inventory host 'b': migbed_lab_address"):
        lab_endpoints(["a"], ["b"], hostvars, 50051)


def test_guests_dealt_over_the_sources_in_turn() -> None:
    guests = spread_guests("tiny", builtin_scenario_text("tiny"), 5, ["s1", "s2"])
    assert [g.source_host for g in guests] == ["s1", "s2", "s1", "s2", "s1"]
    assert len({g.name for g in guests}) == 5
    assert all(g.device_bytes > 0 and g.ram_bytes == 16 << 20 for g in guests)
    with pytest.raises(PlanError, match="sources"):
        spread_guests("tiny", builtin_scenario_text("tiny"), 2, [])


def _run(guest: str, src: str, tgt: str, offset: float, unc: float, outcome: str = "completed") -> GuestRun:
    return GuestRun(guest, src, tgt, "tiny", guest, 0.0, 1.0, outcome, outcome == "completed", 1.0, 1.0,
                    1.0, clock_offset_ms=offset, guest_downtime_uncertainty_ms=unc)


def test_clock_offsets_summarised_per_host_pair() -> None:
    res = EvacuationResult("legacy", "first-come", Limits())
    res.guests = [_run("g0", "s1", "t1", 0.5, 0.2), _run("g1", "s1", "t1", -0.1, 0.4),
                  _run("g2", "s2", "t1", 3.0, 1.0), _run("g3", "s2", "t2", 9.0, 9.0, "failed")]
    pairs = res.to_dict()["clock_offsets"]
    assert pairs == {
        "s1 -> t1": {"runs": 2, "offset_ms_min": -0.1, "offset_ms_max": 0.5, "uncertainty_ms_max": 0.4,
                     "same_clock": False},
        "s2 -> t1": {"runs": 1, "offset_ms_min": 3.0, "offset_ms_max": 3.0, "uncertainty_ms_max": 1.0,
                     "same_clock": False},
    }  # a failed run measured no offset: its pair is left out


def _deploy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  children:\n    source: {hosts: {s1: {ansible_host: 192.0.2.1}}}\n"
                   "    target: {hosts: {t1: {ansible_host: 192.0.2.2}}}\n")
    argv = [sys.executable, "-m", "migbed.cli.main", "deploy", "-i", str(inv), "--out", str(tmp_path / "o"), *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


def test_deploy_evacuate_bad_input_exit_2(tmp_path: Path) -> None:
    res = _deploy(tmp_path, "--evacuate")
    assert res.returncode == 2 and "--evacuate needs --scenario FILE" in res.stderr, res.stderr
    res = _deploy(tmp_path, "--evacuate", "--scenario", "x.toml", "--guests", "0")
    assert res.returncode == 2 and "--guests = 0: allowed 1 .. 64" in res.stderr, res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[guest]\nram-size = "lots"\n')
    res = _deploy(tmp_path, "--evacuate", "--scenario", str(bad))
    assert res.returncode == 2 and "--evacuate:" in res.stderr and "ram-size" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
