"""The CLI's shared vocabulary, in process: HOST:PORT, units, --set, comparisons, the resolver,
the flags of run/up/deploy, exit codes of usage errors. No service is started here."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from migbed.cli import args as cli_args
from migbed.cli.main import build_parser, main
from migbed.comparisons import comparison, comparisons
from migbed.core.address import AddressError, HostPort, parse_address
from migbed.core.overrides import dump_toml
from migbed.core.policy import POLICIES
from migbed.core.scenario import (
    ScenarioError,
    builtin_scenario_text,
    builtin_scenarios,
    parse_scenario,
    resolve_scenario,
)
from migbed.core.units import UnitError, parse_bit_rate, parse_size

# ---------------------------------------------------------------- HOST:PORT


@pytest.mark.parametrize(("text", "host", "port", "shown"), [
    ("127.0.0.1:50051", "127.0.0.1", 50051, "127.0.0.1:50051"),
    ("source:1", "source", 1, "source:1"),
    ("[::1]:65535", "::1", 65535, "[::1]:65535"),
    ("[fe80::1]:80", "fe80::1", 80, "[fe80::1]:80"),
    (" lab-a.example.org:22 ", "lab-a.example.org", 22, "lab-a.example.org:22"),
])
def test_host_port_accepts(text: str, host: str, port: int, shown: str) -> None:
    hp = HostPort.parse(text)
    assert (hp.host, hp.port, str(hp)) == (host, port, shown)


@pytest.mark.parametrize(("text", "says"), [
    ("127.0.0.1:99999", "port must be a number 1-65535"),  # issue 14 #5: it wrapped to 34463
    ("127.0.0.1:0", "port must be a number 1-65535"),
    ("127.0.0.1:-1", "port must be a number 1-65535"),
    ("127.0.0.1:\uff18\uff10", "port must be a number"),  # non-ASCII (fullwidth) digits
    ("127.0.0.1", "expected HOST:PORT"),
    (":50051", "expected HOST:PORT"),
    ("::1:50051", "IPv6 address goes in brackets"),
    ("[::1]50051", "expected [IPv6]:PORT"),
    ("bad host:1", "not a host name"),
    ("x" * 100_000 + ":1", "too long"),
])
def test_host_port_refuses_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(AddressError) as e:
        HostPort.parse(text, "target_address")
    assert str(e.value).startswith("target_address = ")
    assert says in str(e.value)
    assert len(str(e.value)) < 400


def test_port_zero_only_where_asked() -> None:
    assert parse_address("127.0.0.1:0", allow_zero=True) == "127.0.0.1:0"


# ---------------------------------------------------------------- units as tc and QEMU mean them


def test_one_letter_suffixes_are_qemus_powers_of_1024() -> None:
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("4k") == 4096
    assert parse_size("1G") == 2**30
    assert parse_size("1MB") == 10**6  # SI stays SI
    assert parse_size("1MiB") == 2**20


@pytest.mark.parametrize("rate", ["100mbps", "1gbps", "100kbps", "8bps"])
def test_tc_byte_rate_units_are_refused_with_what_to_write(rate: str) -> None:
    with pytest.raises(UnitError) as e:
        parse_bit_rate(rate)
    assert "ambiguous" in str(e.value) and "bit" in str(e.value)


def test_bit_rates_are_tcs() -> None:
    assert parse_bit_rate("100Mbit") == 1e8
    assert parse_bit_rate("1Gbit/s") == 1e9


@pytest.mark.parametrize("value", ["9" * 400 + "GiB", "1e999MiB", "inf", "nan"])
def test_sizes_have_bounded_digits(value: str) -> None:
    with pytest.raises(UnitError):
        parse_size(value)


# ---------------------------------------------------------------- --set


def test_set_overrides_section_and_device_keys() -> None:
    sc = resolve_scenario("mlx5-like", ["migration.downtime-limit=500ms",
                                        "device.vf0.load-setup-time=1s", "guest.seed=7"])
    assert sc.migration.downtime_limit == 0.5
    assert sc.devices[0].load_setup_time == 1.0
    assert sc.guest.seed == 7
    # The text sent to the source is the overridden one, and it says so.
    assert parse_scenario(sc.source_text).migration.downtime_limit == 0.5
    assert "--set migration.downtime-limit=500ms" in sc.source_text.splitlines()[0]


@pytest.mark.parametrize(("override", "says"), [
    ("device.vf9.load-rate=1GB/s", "no device named 'vf9' (the scenario has: vf0)"),
    ("migration.no-such-key=1", "migration: unknown key(s) no-such-key"),
    ("migration.downtime-limit=-3ms", "migration.downtime-limit"),
    ("bogus.key=1", "KEY is name, guest.KEY, migration.KEY, link.KEY or device.NAME.KEY"),
    ("noequals", "expected KEY=VALUE"),
])
def test_bad_overrides_name_the_key(override: str, says: str) -> None:
    with pytest.raises((ScenarioError, argparse.ArgumentTypeError)) as e:
        cli_args.override(override)
        resolve_scenario("mlx5-like", [override])
    assert says in str(e.value)


def test_dump_toml_round_trips_every_builtin_scenario() -> None:
    for name in builtin_scenarios():
        data = tomllib.loads(builtin_scenario_text(name))
        assert tomllib.loads(dump_toml(data)) == data


# ---------------------------------------------------------------- the resolver and comparisons


def test_resolver_takes_files_and_names(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(builtin_scenario_text("tiny").replace('name = "tiny"', 'name = "mine"'))
    assert resolve_scenario(str(f)).name == "mine"
    assert resolve_scenario("tiny").name == "tiny"
    with pytest.raises(ScenarioError) as e:
        resolve_scenario("no-such-scenario")
    assert "no such file and no built-in scenario" in str(e.value) and "mlx5-like" in str(e.value)


def test_every_comparison_resolves_with_registered_policies() -> None:
    table = comparisons()
    assert {"default", "smoke", "downtime-fidelity", "model-fidelity", "scale-big", "scale-many",
            "shaped-accuracy", "stream-throughput"} <= set(table)
    for c in table.values():
        sc = c.resolve()
        assert set(c.policies) <= set(POLICIES)
        assert 1 <= c.repeat <= 100
        assert sc.name
    assert comparison("scale-many").resolve().guest.ram_size == 256 * 2**20
    assert comparison("default").policies == cli_args.DEFAULT_POLICIES


def test_the_default_comparison_uses_a_real_driver() -> None:
    # `migbed run`, `bin/migbed up` and the `default` comparison run one scenario, and its
    # VF follows a real driver's semantics (mlx5), not migbed's own "generic".
    from migbed.comparisons import comparison
    from migbed.core.drivers import DRIVERS
    from migbed.core.scenario import DEFAULT_SCENARIO, resolve_scenario

    assert comparison("default").scenario == DEFAULT_SCENARIO == "cover-letter"
    sc = resolve_scenario(None)
    assert sc.name == DEFAULT_SCENARIO
    assert [d.driver for d in sc.devices] == ["mlx5"] and DRIVERS["mlx5"].real


def test_bench_has_no_inline_scenario_templates() -> None:
    bench = Path(__file__).resolve().parents[2] / "bench"
    for script in bench.glob("*.py"):
        text = script.read_text()
        assert "[guest]" not in text and "SCENARIO = " not in text, script.name


def test_resolve_experiment_layers_comparison_then_flags() -> None:
    p = build_parser("run")
    args = p.parse_args(["run", "--comparison", "smoke", "--repeat", "2", "--set", "guest.seed=3"])
    exp = cli_args.resolve_experiment(args)
    assert exp.scenario.name == "tiny" and exp.repeat == 2 and exp.scenario.guest.seed == 3
    assert exp.policies == ("legacy", "switchover-ack")
    args = p.parse_args(["run", "--policy", "time-aware", "--policy", "time-aware"])
    exp = cli_args.resolve_experiment(args)
    assert exp.policies == ("time-aware",) and exp.repeat == 3 and exp.scenario.name == "cover-letter"


# ---------------------------------------------------------------- one vocabulary, exit codes


@pytest.mark.parametrize("command", ["run", "up", "deploy"])
def test_run_up_deploy_share_the_flags(command: str) -> None:
    p = build_parser(command)
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = {o: a for a in sub._actions for o in a.option_strings}
    for flag in ("--scenario", "--set", "--comparison", "--policy", "--repeat", "--out"):
        assert flag in flags, f"migbed {command} has no {flag}"
    assert tuple(flags["--policy"].choices) == POLICIES
    assert flags["--repeat"].type.__name__ == "integer"


@pytest.mark.parametrize("argv", [
    ["run", "--repeat", "0"], ["run", "--repeat", "101"], ["run", "--repeat", "9" * 50],
    ["run", "--policy", "bogus"], ["run", "--source", "127.0.0.1:99999", "--target", "t:1"],
    ["up", "--policy", "bogus"], ["up", "--repeat", "-1"], ["deploy", "-i", "x", "--repeat", "0"],
    ["status", "nohost"], ["serve", "source", "--listen", "1.2.3.4:70000"],
])
def test_usage_errors_exit_2_before_anything(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == cli_args.EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_command_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--source", "127.0.0.1:1"]) == cli_args.EXIT_USAGE  # --target missing
    assert main(["run", "--scenario", "nope", "--out", str(tmp_path / "o")]) == cli_args.EXIT_USAGE
    assert main(["run", "--set", "device.x.y=1", "--out", str(tmp_path / "o")]) == cli_args.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--source and --target go together" in err and "no device named 'x'" in err


def test_unreachable_service_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from migbed.experiments.localstack import free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["status", dead, "--timeout", "1"]) == cli_args.EXIT_UNREACHABLE
    assert main(["health", dead, "--timeout", "1"]) == cli_args.EXIT_UNREACHABLE
    assert main(["cancel", dead, "some-run"]) == cli_args.EXIT_UNREACHABLE
    assert main(["run", "--source", dead, "--target", "127.0.0.1:2", "--comparison", "smoke",
                 "--out", str(tmp_path / "out")]) == cli_args.EXIT_UNREACHABLE
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import migbed

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"migbed {migbed.__version__}"


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class NotATty:
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr("sys.stderr", NotATty())
    assert cli_args.progress_wanted(no_progress=False) is False


def test_a_missing_extra_is_named_even_on_help(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15: `migbed up --help` showed a stub (`rest`) when its module could not load."""
    from migbed.cli import main as cli_main

    monkeypatch.setitem(cli_main._EXTENSIONS, "up", ("migbed.no_such_module", "add_up_parser", "x"))
    assert main(["up", "--help"]) == cli_args.EXIT_USAGE
    err = capsys.readouterr().err
    assert "pip install 'migbed[stack]'" in err and "migbed.no_such_module" in err
    assert "rest" not in err
