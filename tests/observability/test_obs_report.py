"""`migbed report DIR`: plots and a self-contained HTML page from results.json."""

from __future__ import annotations

import argparse
from html.parser import HTMLParser
from pathlib import Path

import pytest
from obs_synth import POLICIES, make_record, make_records
from PIL import Image

from migbed.cli.report import add_parser
from migbed.measure.record import RunRecord, dump_results
from migbed.report.plot import representative_run
from migbed.report.report import write_report


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.rows = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if tag == "tr":
            self.rows += 1
        for key in ("src", "href"):
            v = a.get(key)
            if v and not v.startswith(("data:", "#")):
                self.external.append(v)


def write(tmp: Path, records: list[RunRecord]) -> Path:
    dump_results(records, str(tmp / "results.json"))
    return write_report(tmp)


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.width >= 600 and im.height >= 300
        # not blank: a plot has many colours
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20


def test_report_from_one_scenario(tmp_path: Path) -> None:
    records = make_records(repeats=3)
    records.append(make_record("legacy", 9, outcome="failed"))
    page = write(tmp_path, records)
    assert page == tmp_path / "report.html"
    check_png(tmp_path / "downtime.png")
    check_png(tmp_path / "timeline.png")
    text = page.read_text()
    parser = PageParser()
    parser.feed(text)
    assert len(parser.imgs) == 2 and all(s.startswith("data:image/png;base64,") for s in parser.imgs)
    assert parser.external == []  # self-contained
    # summary: one row per policy; every run: one row per record; plus two header rows
    assert parser.rows == 2 + len(POLICIES) + len(records)
    for policy in POLICIES:
        assert policy in text
    assert "3/4" in text  # legacy: 3 of 4 runs completed
    assert "Guest-visible downtime" in text


def test_report_with_several_scenarios(tmp_path: Path) -> None:
    records = make_records(repeats=2, scenario="mlx5-like") + make_records(repeats=2, scenario="slow link")
    page = write(tmp_path, records)
    check_png(tmp_path / "downtime.png")
    check_png(tmp_path / "timeline-mlx5-like.png")
    check_png(tmp_path / "timeline-slow-link.png")
    assert not (tmp_path / "timeline.png").exists()
    parser = PageParser()
    parser.feed(page.read_text())
    assert len(parser.imgs) == 3


def test_report_of_a_single_run_and_all_failed(tmp_path: Path) -> None:
    rec = make_record("switchover-ack", 0)
    failed = make_record("legacy", 0, outcome="failed")
    failed.timeline, failed.events = [], []
    page = write(tmp_path, [rec, failed])
    assert page.exists()
    check_png(tmp_path / "downtime.png")


def test_representative_run_is_the_median() -> None:
    runs = [make_record("legacy", r) for r in range(3)]
    rep = representative_run(runs)
    assert rep is not None
    assert sorted(r.guest_downtime_ms for r in runs)[1] == rep.guest_downtime_ms


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="migbed")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    dump_results(make_records(repeats=1), str(tmp_path / "results.json"))
    args = parser.parse_args(["report", str(tmp_path)])
    assert args.func(args) == 0
    assert "report.html" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    args = parser.parse_args(["report", str(empty)])
    assert args.func(args) == 2
    assert "no results.json" in capsys.readouterr().err


def test_html_and_terminal_tables_show_the_same_median_and_range() -> None:
    """One summary of repeats (report.stats): the HTML page and the terminal table agree."""
    from migbed.report.report import summary_rows
    from migbed.report.stats import format_spread
    from migbed.report.summary import results_table

    records = [make_record("switchover-ack", i) for i in range(3)]
    for r, ms in zip(records, (10.0, 40.0, 12.0), strict=True):
        r.guest_downtime_ms = ms
    assert format_spread([10.0, 40.0, 12.0]) == "12 [10-40]"  # the median, not the mean (21)
    [row] = summary_rows(records)
    assert "12 [10-40]" in row
    assert "12 [10-40]" in results_table(records)
