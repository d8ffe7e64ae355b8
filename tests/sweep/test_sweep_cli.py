"""`migbed sweep` end to end between two local processes: every cell written, a SIGKILLed sweep
resumed to exactly --repeat runs per cell and policy, bad axes refused before anything runs."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migbed.cli.main import main
from migbed.experiments.sweep import read_runs

# A few seconds per run: the tiny guest, a short warm-up.
SMALL = ["--scenario", "tiny", "--set", "migration.warmup=100ms", "--no-progress"]


def sweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migbed", "sweep", *args], capture_output=True,
                          text=True, timeout=600)


def lines(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]


def test_a_2x2_sweep_runs_every_cell_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    p = sweep(*SMALL, "--vary", "migration.max-bandwidth=128MiB/s,512MiB/s",
              "--vary", "device.vf0.load-setup-time=100ms,300ms",
              "--policy", "legacy", "--policy", "switchover-ack", "--out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    runs = read_runs(out)
    assert sorted((r.cell, r.policy) for r in runs) == sorted(
        (c, pol) for c in range(4) for pol in ("legacy", "switchover-ack"))
    for r in runs:
        assert r.record.outcome == "completed" and r.record.verified, r.record.error
        # Prometheus sees one scenario label for the whole sweep; the cell is in the record.
        assert r.record.scenario == "tiny"
        assert r.record.labels["cell"] == str(r.cell)
    cells = {r.cell: r.record.labels for r in runs}
    assert {cells[c]["axis:migration.max-bandwidth"] for c in cells} == {"128MiB/s", "512MiB/s"}
    assert len((out / "runs.csv").read_text().splitlines()) == 1 + 8
    preds = json.loads((out / "predictions.json").read_text())["cells"]
    assert [c["cell"] for c in preds] == [0, 1, 2, 3]
    page = (out / "regime.html").read_text()
    assert "regime boundary" in page and "data:image/png;base64," in page
    for name in ("regime-guest.png", "regime-qemu.png", "regime-penalty.png", "cells.csv"):
        assert (out / name).stat().st_size > 0


def test_a_predicted_map_names_the_cells_where_data_never_fits(tmp_path: Path) -> None:
    # cover-letter (mlx5's whole-state MIG_DATA_SIZE, 320 MB) across the threshold: at
    # 512 MiB/s x 300 ms the data never fits and a cap ends pre-copy; at 1250 MB/s it fits.
    # The regime map says "capped" there, not "absorbed", and marks the capped values.
    out = tmp_path / "sw"
    assert main(["sweep", "--predict", "--vary",
                 "migration.avail-switchover-bandwidth=512MiB/s,1250MB/s",
                 "--policy", "legacy", "--policy", "time-aware", "--out", str(out)]) == 0
    rows = [line.split(",") for line in (out / "cells.csv").read_text().splitlines()]
    head = rows[0]
    regime = {(r[head.index("migration.avail-switchover-bandwidth")], r[head.index("policy")]):
              r[head.index("regime")] for r in rows[1:]}
    assert regime[("512MiB/s", "legacy")] == "capped"
    assert regime[("1250MB/s", "legacy")] == "in-downtime"
    assert "capped" in (out / "regime.html").read_text()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (not yet reaped by its new parent) is gone too.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ")[1].startswith("Z")


def test_a_killed_sweep_resumes_and_ends_with_exactly_repeat_runs(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    args = [*SMALL, "--vary", "device.vf0.load-setup-time=100ms,200ms", "--policy", "legacy",
            "--repeat", "2", "--no-report"]
    proc = subprocess.Popen([sys.executable, "-m", "migbed", "sweep", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            runs_file = out / "runs.jsonl"
            if runs_file.exists() and runs_file.read_text().count("\n") >= 1:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no run finished within 180 s")
        proc.send_signal(signal.SIGKILL)  # mid-run: the second run has just started
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = lines(out)
    assert 1 <= len(before) < 4
    # The local services die with the sweep (no orphans left serving).
    pids = [v["pid"] for v in json.loads((out / "logs" / "stack.json").read_text()).values()]
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in pids)
    # The run in flight: its source cancelled it and kept its record (orphans.jsonl, beside
    # those of the runs that ended in the 10 s before, which the sweep may not have written).
    orphans = [json.loads(x) for x in (out / "orphans.jsonl").read_text().splitlines()]
    cut = [o for o in orphans if o["run_id"] not in {x["record"]["run_id"] for x in before}
           and "calibration" not in o["run_id"]]
    assert [o["outcome"] for o in cut] == ["cancelled"], orphans
    assert "orchestrator" in cut[0]["error"]

    p = sweep("--resume", str(out), "--no-progress", "--no-report")
    assert p.returncode == 0, p.stdout + p.stderr
    after = lines(out)
    count = collections.Counter((x["cell"], x["policy"]) for x in after)
    assert count == {(0, "legacy"): 2, (1, "legacy"): 2}
    assert len({(x["cell"], x["repeat"]) for x in after}) == 4 == len(after)
    # What was finished before the kill was kept, not redone.
    assert [x["record"]["run_id"] for x in after[: len(before)]] == [x["record"]["run_id"] for x in before]
    assert all(x["record"]["verified"] for x in after)


@pytest.mark.parametrize(("vary", "named"), [
    ("device.vf0.load-setup-tim=1s", "load-setup-tim"),
    ("device.vf9.load-rate=1GB/s", "device.vf9.load-rate"),
    ("device.vf0.load-setup-time=fast,1s", "device.vf0.load-setup-time"),
    ("migration.max-bandwidth=", "migration.max-bandwidth"),
    ("migration.downtime-limit=300ms,0ms", "migration.downtime-limit"),
    ("migration.max-bandwidth=1GiB/s,1GiB/s", "migration.max-bandwidth"),
    ("guest.ram-size=16MiB,16MB", "guest.ram-size"),
    ("foo.bar=1", "foo.bar"),
    ("link.rate=1Gbit,10Gbit", "link.rate"),
])
def test_a_bad_axis_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    vary: str, named: str) -> None:
    out = tmp_path / "sw"
    code = main(["sweep", "--scenario", "tiny", "--vary", "migration.warmup=100ms,200ms",
                 "--vary", vary, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert named in err and "Traceback" not in err
    assert not out.exists()  # nothing written, nothing started
