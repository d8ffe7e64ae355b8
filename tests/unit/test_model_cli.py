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
