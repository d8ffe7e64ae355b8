"""`migbed predict`: a table per policy, a grid with --vary, bad input refused naming the key."""

from __future__ import annotations

import json

import pytest

from migbed.cli.main import main
from migbed.core.policy import POLICIES


def test_predict_prints_every_policy_and_the_regime(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "tiny", "--unshaped", "--wire-rate", "800MB/s"]) == 0
    out = capsys.readouterr().out
    for policy in POLICIES:
        assert f"\n{policy} " in out
    assert "regime: in-downtime" in out and "the ACK costs" in out


def test_predict_a_grid_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", "tiny", "--unshaped", "--policy", "legacy", "--json",
                 "--vary", "device.vf0.load-setup-time=100ms,1s", "--vary", "guest.dirty-rate=1MiB/s,8MiB/s"])
    assert code == 0
    cells = json.loads(capsys.readouterr().out)
    assert len(cells) == 4
    # a longer setup is never cheaper under legacy
    by = {(c["values"]["device.vf0.load-setup-time"], c["values"]["guest.dirty-rate"]): c for c in cells}
    short = by[("100ms", "1MiB/s")]["prediction"]["outcomes"]["legacy"]["guest_downtime_s"]
    long = by[("1s", "1MiB/s")]["prediction"]["outcomes"]["legacy"]["guest_downtime_s"]
    assert long > short + 0.8


@pytest.mark.parametrize(("args", "named"), [
    (["--set", "migration.downtime-limit=fast"], "migration.downtime-limit"),
    (["--set", "device.vf3.load-rate=1GB/s"], "vf3"),
    (["--vary", "guest.ram-size="], "guest.ram-size"),
])
def test_predict_refuses_bad_input_naming_the_key(capsys: pytest.CaptureFixture[str], args: list[str],
                                                  named: str) -> None:
    assert main(["predict", "tiny", *args]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err


def test_predict_names_the_regime_where_data_never_fits(capsys: pytest.CaptureFixture[str]) -> None:
    # cover-letter at mlx5-like's 512 MiB/s: mlx5's whole-state MIG_DATA_SIZE (320 MB) stays
    # above the 161 MB threshold, so QEMU's rule never fires and only max-iterations ends
    # pre-copy. That is its own regime, not "absorbed" (where the setup happens to land
    # after ~100 iterations says nothing about the rule); time-aware switches on its
    # prediction there.
    slow = ["--set", "migration.avail-switchover-bandwidth=512MiB/s"]
    assert main(["predict", "cover-letter", *slow]) == 0
    out = capsys.readouterr().out
    assert "regime: capped: legacy's data never fits the threshold, pre-copy ends on max-iterations" in out
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines()[3:7]}
    assert rows == {"legacy": "max-iterations", "initial-bytes-sent": "max-iterations",
                    "switchover-ack": "max-iterations", "time-aware": "prediction"}
    assert main(["predict", "cover-letter", "--vary",
                 "migration.avail-switchover-bandwidth=512MiB/s,1250MB/s"]) == 0
    grid = capsys.readouterr().out.splitlines()
    assert "] capped: " in grid[0] and "legacy=320 [cap]" in grid[0]
    assert "] in-downtime: " in grid[1] and "[cap]" not in grid[1]
