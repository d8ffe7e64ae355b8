"""Exit codes: what `migbed --help` documents is what the commands return (issue 23, item 9).

Each code is produced by a real command in a test of its own (docs/faults.md, "Exit codes",
lists them); here: the documentation, and the rule that turns runs' records into a code.
"""

from __future__ import annotations

import signal

from migbed.cli.args import EXIT_FAILED, EXIT_OF_RUNS, EXIT_OK, EXIT_UNREACHABLE
from migbed.cli.main import build_parser
from migbed.experiments.follow import RECORDED_BY, runs_outcome
from migbed.experiments.interrupt import Interruption
from migbed.measure.record import RunRecord


def rec(outcome: str, verified: bool = False, by: str = "") -> RunRecord:
    return RunRecord(run_id="r", scenario="s", policy="legacy", repeat=0, outcome=outcome,
                     verified=verified, labels={RECORDED_BY: by} if by else {})


def test_help_documents_every_code() -> None:
    text = " ".join(build_parser().format_help().split())
    for words in ("0 every run completed and verified",
                  "1 a run failed, was cancelled or was not verified",
                  "2 bad arguments or input", "3 a service did not answer",
                  "4 runs ended but their records could not be written where asked",
                  "128+N stopped by signal N (130 SIGINT, 129 SIGHUP, 143 SIGTERM)",
                  "When several apply: 4, then 128+N, 3, 1."):
        assert words in text, words


def test_runs_to_code() -> None:
    def code(*records: RunRecord) -> int:
        return EXIT_OF_RUNS[runs_outcome(list(records))]
    assert code(rec("completed", True), rec("completed", True)) == EXIT_OK
    assert code(rec("completed", True), rec("cancelled")) == EXIT_FAILED  # --cancel-after
    assert code(rec("completed", False)) == EXIT_FAILED  # not verified
    assert code(rec("failed")) == EXIT_FAILED
    assert code() == EXIT_FAILED  # nothing ran
    assert code(rec("completed", True), rec("failed", by="orchestrator")) == EXIT_UNREACHABLE


def test_a_signal_is_128_plus_its_number() -> None:
    for sig, expected in ((signal.SIGINT, 130), (signal.SIGHUP, 129), (signal.SIGTERM, 143)):
        stop = Interruption("migbed run")
        stop.fire(sig)
        assert stop.exit_code() == expected
        assert stop.reason().startswith(f"migbed run got {signal.Signals(sig).name} (pid ")
