"""Issue 14, failures 2-5: each reproduced at the layer that broke, then shown fixed through
the real CLI (`python -m migbed`, a subprocess) and through a real source's Control.Start.

2. a completed migration's record lost when results cannot be written (/dev/full, /proc/nope)
3. unbounded reads: a scenario that is a symlink to /dev/zero, a FIFO
4. tracebacks instead of field errors: a 5000-digit integer, "999...GiB", deep nesting in TOML
   and labels_json, a non-UTF-8 file
5. target_address port 99999 accepted (it wrapped); error texts that overflow gRPC's metadata
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from faultlab import Lab, control_stub, scenario_toml, sessions, stop_cleanly

from migbed.experiments.localstack import Service
from migbed.wire import migration_pb2 as pb

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
DEEP = 5000
TOO_MANY_DIGITS = "9" * 5000


def cli(*argv: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line; a hang fails the test through the timeout."""
    return subprocess.run([sys.executable, "-m", "migbed", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})}, check=False)


def assert_clear_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr
    assert len(proc.stderr) < 2000, "the error echoes its input unbounded"


def scenario_with(tmp_path: Path, name: str, body: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(body)
    return str(path)


# ---------------------------------------------------------------- 3: unbounded reads


def test_3_symlink_to_dev_zero_is_refused_not_read(tmp_path: Path) -> None:
    link = tmp_path / "zero.toml"
    link.symlink_to("/dev/zero")
    with open(link, "rb") as fh:  # the bug: a plain read() of this never ends (3 GiB in 6 s)
        assert fh.read(1 << 20) == b"\0" * (1 << 20)
    assert_clear_error(cli("scenarios", str(link), timeout=30),
                       "is a character device, not a regular file")
    assert_clear_error(cli("run", "--scenario", str(link), "--out", str(tmp_path / "o"), timeout=30),
                       "not a regular file")


def test_3_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    # The bug: open() of a FIFO with no writer blocks forever; the CLI must answer at once.
    t0 = time.monotonic()
    assert_clear_error(cli("scenarios", str(fifo), timeout=30), "is a FIFO, not a regular file")
    assert time.monotonic() - t0 < 20


def test_3_large_file_is_refused_by_size(tmp_path: Path) -> None:
    big = scenario_with(tmp_path, "big.toml", b"# padding\n" * 100_000)  # ~1 MB of comments
    assert_clear_error(cli("scenarios", big), "bytes; at most 262144 allowed")


# ---------------------------------------------------------------- 4: field errors, not tracebacks


def test_4_five_thousand_digit_integer(tmp_path: Path) -> None:
    text = f'name = "x"\n[guest]\nram-size = {TOO_MANY_DIGITS}\n'
    with pytest.raises(ValueError, match="4300"):  # the bug: tomllib's int limit, uncaught
        tomllib.loads(text)
    assert_clear_error(cli("scenarios", scenario_with(tmp_path, "d.toml", text.encode())),
                       "ram-size (line 3) is an integer of 5000 digits; at most 100 allowed")


def test_4_huge_size_string_is_bounded(tmp_path: Path) -> None:
    text = f'name = "x"\n[guest]\nram-size = "{"9" * 400}GiB"\n'
    with pytest.raises(OverflowError):  # the bug: float(400 digits) * GiB rounded -> OverflowError
        round(float("9" * 400) * 2**30)
    proc = cli("scenarios", scenario_with(tmp_path, "s.toml", text.encode()))
    assert_clear_error(proc, "guest.ram-size = ", "too long for a size")
    assert proc.stderr.index("guest.ram-size") < 40, "the field comes first"


def test_4_deeply_nested_toml(tmp_path: Path) -> None:
    text = f'name = "x"\nlabels = {"[" * DEEP}{"]" * DEEP}\n'
    with pytest.raises(RecursionError):  # the bug: tomllib recurses per level
        tomllib.loads(text)
    assert_clear_error(cli("scenarios", scenario_with(tmp_path, "n.toml", text.encode())),
                       f"nested {DEEP} deep; at most 8 allowed")


def test_4_non_utf8_file_names_the_byte(tmp_path: Path) -> None:
    body = b'name = "x"\n[guest]\nram-size = "16MiB\xff"\n'
    with pytest.raises(UnicodeDecodeError):  # the bug: open(..., encoding="utf-8").read()
        body.decode("utf-8")
    assert_clear_error(cli("scenarios", scenario_with(tmp_path, "u.toml", body)),
                       "not UTF-8 text (byte 0xff at offset 36, line 3)")


def test_4_overrides_are_bounded_too(tmp_path: Path) -> None:
    assert_clear_error(cli("scenarios", "tiny", "--set", f"guest.ram-size={TOO_MANY_DIGITS}"),
                       "at most 200 characters")
    assert_clear_error(cli("scenarios", "tiny", "--set", "guest.ram-size=" + "[" * 150 + "]" * 150),
                       "at most 200 characters")
    assert_clear_error(cli("scenarios", "tiny", "--set", "link.rate=100mbps"),
                       "link.rate = '100mbps'", "ambiguous")


# ---------------------------------------------------------------- 4 and 5 through Control.Start


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    lb = Lab(tmp_path_factory.mktemp("issue14"))
    try:
        svc = lb.start("source")
        yield svc
        assert sessions(svc.address) == []
        stop_cleanly(svc)
    finally:
        lb.close()


def start(source: Service, **over: str) -> grpc.RpcError:
    req = pb.StartRequest(scenario_toml=scenario_toml("i14"), policy="legacy",
                          target_address="127.0.0.1:1", run_id=f"i14-{time.monotonic_ns()}")
    for k, v in over.items():
        setattr(req, k, v)
    ch, stub = control_stub(source.address)
    with ch, pytest.raises(grpc.RpcError) as e:
        stub.Start(req, timeout=20)
    return e.value


@pytest.mark.parametrize(("over", "words"), [
    ({"scenario_toml": f'name = "x"\n[guest]\nram-size = {TOO_MANY_DIGITS}\n'},
     ["scenario: ", "ram-size (line 3) is an integer of 5000 digits"]),
    ({"scenario_toml": f'name = "x"\n[guest]\nram-size = "{"9" * 400}GiB"\n'},
     ["scenario: guest.ram-size = ", "too long for a size"]),
    ({"scenario_toml": f'name = "x"\nx = {"[" * DEEP}{"]" * DEEP}\n'}, ["nested 5000 deep"]),
    ({"labels_json": "[" * 1000 + "]" * 1000}, ["labels_json: a flat object of strings"]),
    ({"labels_json": "[" * DEEP + "]" * DEEP}, ["labels_json: 10000 characters; at most 4096"]),
    ({"labels_json": json.dumps({"k": {"nested": 1}})}, ["labels_json: a flat object of strings"]),
    ({"labels_json": json.dumps({f"k{i}": "v" for i in range(100)})}, ["labels_json: 100 labels"]),
    ({"labels_json": json.dumps({"k": "v" * 100_000})}, ["labels_json: ", "at most 4096"]),
    ({"target_address": "127.0.0.1:99999"}, ["target_address = '127.0.0.1:99999'", "1-65535"]),
    ({"target_address": "127.0.0.1:0"}, ["target_address", "1-65535"]),
    ({"target_address": "x" * 100_000 + ":1"}, ["target_address = ", "too long"]),
    ({"policy": "p" * 100_000}, ["policy = 'ppp", "allowed legacy"]),
    ({"scenario_toml": 'name = "x"\n[guest]\nram-size = "16MiB"\n' + "".join(
        f'k{i}{"x" * 500} = 1\n' for i in range(200))}, ["scenario: guest: unknown key(s)", "more characters"]),
])
def test_start_refuses_with_a_short_field_error(source: Service, over: dict[str, str],
                                                words: list[str]) -> None:
    err = start(source, **over)
    # Not UNKNOWN (an exception escaped), not RESOURCE_EXHAUSTED (the text overflowed the
    # 16 KiB metadata limit): the real error, naming the field.
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), str(err.details())[:300])
    details = str(err.details())
    for w in words:
        assert w in details, details[:500]
    assert len(details) < 2500
    assert sessions(source.address) == []


# ---------------------------------------------------------------- 2: results never lost


def test_2_bad_out_is_refused_before_any_migration(tmp_path: Path) -> None:
    for out in ("/proc/nope", "/dev/null/x"):
        proc = cli("run", "--comparison", "smoke", "--out", out, timeout=60)
        assert_clear_error(proc, f"--out {out}: cannot write there")
        assert "started" not in proc.stdout, "a run started before --out was checked"


def test_2_record_survives_an_unwritable_results_folder(tmp_path: Path) -> None:
    """results.jsonl and results.json point at /dev/full (every write: ENOSPC), as a disk
    that fills during the run: the record goes to the printed fallback as the run ends, the
    table is still shown, and the exit code says where the results went (4)."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("results.jsonl", "results.json"):
        (out / name).symlink_to("/dev/full")
    with pytest.raises(OSError):  # the bug: results.json written after the runs, unguarded
        (out / "results.json").write_text("[]")
    fallback = tmp_path / "fallback"
    proc = cli("run", "--comparison", "smoke", "--policy", "legacy", "--out", str(out),
               "--no-report", timeout=180, env={"MIGBED_FALLBACK_DIR": str(fallback)})
    assert proc.returncode == 4, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "No space left on device" in proc.stderr
    saved = sorted(fallback.glob("results-*.jsonl"))
    assert len(saved) == 1 and str(saved[0]) in proc.stderr
    records = [json.loads(line) for line in saved[0].read_text().splitlines()]
    assert len(records) == 1 and records[0]["outcome"] == "completed" and records[0]["verified"]
    assert records[0]["run_id"] in proc.stdout  # printed as the run started
    assert "guest downtime ms" in proc.stdout and "legacy" in proc.stdout  # the table


def test_2_each_record_is_on_disk_as_its_run_ends(tmp_path: Path) -> None:
    """results.jsonl holds one line per run, each a complete record, beside results.json."""
    out = tmp_path / "out"
    proc = cli("run", "--comparison", "smoke", "--out", str(out), "--no-report", timeout=180)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["policy"] for x in lines] == ["legacy", "switchover-ack"]
    assert json.loads((out / "results.json").read_text()) == [json.loads(x) for x in lines]
    for x in lines:
        assert f"migbed: run {json.loads(x)['run_id']} started" in proc.stdout


def test_a_failed_run_exits_1_with_its_record_kept(source: Service, tmp_path: Path) -> None:
    """Exit codes: a run that fails (no target behind the address) is 1, not 2 or 3, and its
    record is on disk like any other."""
    from migbed.experiments.localstack import free_port

    out = tmp_path / "out"
    proc = cli("run", "--source", source.address, "--target", f"127.0.0.1:{free_port()}",
               "--comparison", "smoke", "--policy", "legacy", "--out", str(out), "--no-report",
               timeout=120)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    record = json.loads((out / "results.jsonl").read_text())
    assert record["outcome"] == "failed" and "during setup" in record["error"]
    assert f"! {record['run_id']}: failed" in proc.stdout


def test_2_an_out_with_earlier_results_is_refused(tmp_path: Path) -> None:
    """results.jsonl is append-only: a second comparison into the same folder would mix two
    runs' records, so it is refused before anything starts."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"run_id": "earlier"}\n')
    proc = cli("run", "--comparison", "smoke", "--out", str(out))
    assert_clear_error(proc, "holds the results of an earlier run")
    assert (out / "results.jsonl").read_text() == '{"run_id": "earlier"}\n'
