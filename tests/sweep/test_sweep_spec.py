"""Sweep specs without processes: overrides, cells, sweep files, the run log and what remains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migbed.core.scenario import builtin_scenario_text, parse_scenario
from migbed.experiments.sweep import (
    RUNS_FILE,
    Axis,
    FinishedRun,
    SweepError,
    SweepSpec,
    append_run,
    apply_overrides,
    builtin_sweeps,
    load_sweep,
    read_runs,
    remaining,
    validate,
)
from migbed.measure.record import RunRecord


def test_overrides_set_sections_and_devices_and_keep_the_rest() -> None:
    text = apply_overrides(builtin_scenario_text("two-vfs"), {
        "device.vf1.load-setup-time": "2s", "migration.max-bandwidth": "512MiB/s",
        "link.rate": "5Gbit", "migration.multifd": True, "migration.max-iterations": 7})
    sc = parse_scenario(text)
    assert sc.devices[1].load_setup_time == 2.0 and sc.devices[0].load_setup_time == 0.8
    assert sc.migration.max_bandwidth == 512 * 2**20 and sc.migration.multifd
    assert sc.migration.max_iterations == 7 and sc.link.rate == 5e9
    assert sc.guest.ram_size == 256 * 2**20  # untouched


@pytest.mark.parametrize(("key", "named"), [("device.vf7.load-rate", "vf7"), ("device.load-rate", "device.NAME.KEY"),
                                            ("gpu.x", "gpu.x")])
def test_overrides_refuse_a_key_with_no_place(key: str, named: str) -> None:
    with pytest.raises(SweepError, match=named):
        apply_overrides(builtin_scenario_text("tiny"), {key: "1"})


def test_cells_cross_the_axes_and_share_one_scenario_name() -> None:
    spec = SweepSpec("my-sweep", builtin_scenario_text("tiny"),
                     [Axis("migration.max-bandwidth", ("128MiB/s", "1GiB/s")),
                      Axis("device.vf0.load-setup-time", ("100ms", "1s", "2s"))], ["legacy"])
    cells = validate(spec)
    assert len(cells) == 6
    assert cells[5].values == {"migration.max-bandwidth": "1GiB/s", "device.vf0.load-setup-time": "2s"}
    assert cells[5].scenario is not None and cells[5].scenario.devices[0].load_setup_time == 2.0
    assert {c.scenario.name for c in cells if c.scenario} == {"my-sweep"}  # a bounded label


def test_a_combination_that_is_invalid_only_together_is_refused_naming_the_cell() -> None:
    spec = SweepSpec("s", builtin_scenario_text("tiny"),
                     [Axis("device.vf0.initial-bytes", ("8MB", "128KiB")),
                      Axis("device.vf0.block-size", ("64KiB", "256KiB"))], ["legacy"])
    with pytest.raises(SweepError, match="initial-bytes=128KiB, block-size=256KiB"):
        validate(spec)


def test_every_builtin_sweep_is_valid_and_small_enough_to_run() -> None:
    assert builtin_sweeps()
    for name in builtin_sweeps():
        spec = load_sweep(name)
        cells = validate(spec)
        assert 4 <= len(cells) * spec.repeat * len(spec.policies) <= 40, name


def test_the_run_log_drops_a_torn_last_line_and_what_remains_is_exact(tmp_path: Path) -> None:
    spec = SweepSpec("s", builtin_scenario_text("tiny"), [Axis("migration.warmup", ("100ms", "200ms"))],
                     ["legacy", "switchover-ack"], repeat=2)
    for cell, policy, repeat in [(0, "legacy", 0), (0, "switchover-ack", 0), (1, "legacy", 1)]:
        append_run(tmp_path, FinishedRun(cell, policy, repeat, RunRecord(f"r{cell}{policy}{repeat}", "s",
                                                                        policy, repeat, "completed")))
    with open(tmp_path / RUNS_FILE, "a") as fh:  # killed in the middle of a write
        fh.write(json.dumps({"cell": 1, "policy": "switchover-ack", "repeat": 0})[:20])
    done = read_runs(tmp_path, repair=True)
    assert len(done) == 3
    assert (tmp_path / RUNS_FILE).read_text().endswith("}\n")  # the torn tail was cut off
    assert remaining(spec, done) == [(0, 1, "legacy"), (0, 1, "switchover-ack"), (1, 0, "legacy"),
                                     (1, 0, "switchover-ack"), (1, 1, "switchover-ack")]


def test_runs_cut_short_are_kept_and_run_again(tmp_path: Path) -> None:
    """A run cancelled by a stop signal (labelled interrupted), one whose source was lost (the
    orchestrator's record) and one its source cancelled when the sweep died (orphans.jsonl)
    are kept, count as not done for --resume, and give way to the run made in their place."""
    spec = SweepSpec("s", builtin_scenario_text("tiny"), [Axis("migration.warmup", ("100ms", "200ms"))],
                     ["legacy"], repeat=2)

    def rec(run_id: str, outcome: str, repeat: int, cell: int, **labels: str) -> RunRecord:
        return RunRecord(run_id, "s", "legacy", repeat, outcome, verified=outcome == "completed",
                         labels={"cell": str(cell), **labels})
    append_run(tmp_path, FinishedRun(0, "legacy", 0, rec("a", "completed", 0, 0)))
    append_run(tmp_path, FinishedRun(0, "legacy", 1, rec("b", "cancelled", 1, 0,
                                                         interrupted="SIGTERM")))
    append_run(tmp_path, FinishedRun(1, "legacy", 0, rec("c", "failed", 0, 1,
                                                         **{"recorded-by": "orchestrator"})))
    orphans = [rec("a", "completed", 0, 0, **{"recorded-by": "source service"}),  # written too
               rec("d", "cancelled", 1, 1, **{"recorded-by": "source service"})]
    (tmp_path / "orphans.jsonl").write_text("".join(r.to_json() + "\n" for r in orphans))
    done = read_runs(tmp_path)
    assert sorted(r.record.run_id for r in done) == ["a", "b", "c", "d"]
    assert remaining(spec, done) == [(0, 1, "legacy"), (1, 0, "legacy"), (1, 1, "legacy")]
    append_run(tmp_path, FinishedRun(0, "legacy", 1, rec("b2", "completed", 1, 0)))
    assert "b2" in {r.record.run_id for r in read_runs(tmp_path)}


@pytest.mark.parametrize(("body", "named"), [
    ('policies = "legacy"\n', "policies"),
    ("repeat = \"2\"\n", "repeat"),
    ("axis = 3\n", "axis"),
    ('[[axis]]\nkey = "migration.warmup"\nvalues = [{a = 1}]\n', "migration.warmup"),
    ('[[axis]]\nkey = "migration.warmup"\n', r"axis\[0\]"),
    ('colour = "red"\n', "colour"),
])
def test_a_bad_sweep_file_is_refused_naming_the_field(tmp_path: Path, body: str, named: str) -> None:
    path = tmp_path / "s.toml"
    axis = "" if "axis" in body else '[[axis]]\nkey = "migration.warmup"\nvalues = ["100ms"]\n'
    top, tables = (body, "") if not body.startswith("[") else ("", body)
    path.write_text(f'name = "s"\nscenario = "tiny"\n{top}{axis}{tables}')
    with pytest.raises(SweepError, match=named):
        validate(load_sweep(str(path)))


def test_a_run_log_edited_by_hand_is_refused_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / RUNS_FILE).write_text('{"cell": 0}\n{"cell": 1, "policy": "legacy", "repeat": 0}\n')
    with pytest.raises(SweepError, match=r"runs.jsonl:1"):
        read_runs(tmp_path)
