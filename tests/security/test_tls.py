"""Mutual TLS between source and target and on the Control API, with real processes.

Two labs (two CAs, made by `migbed certs`): peers of one lab work together; a peer of the
other lab, or one without TLS, is refused in the handshake, with an error that says so.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from faultlab import Lab, scenario_toml, start_run, stop_cleanly

from migbed.experiments.controller import ControlError, SourceControl
from migbed.experiments.localstack import Service, free_port, start_service
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg
from migbed.wire.tls import TlsDir

pytestmark = pytest.mark.timeout(300)
CLI = [sys.executable, "-m", "migbed.cli.main"]
GOOD = scenario_toml("tls")


def certs(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "certs", str(folder), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("tls")
    for name in ("a", "b"):
        out = certs(base / name)
        assert out.returncode == 0, out.stderr
    return base / "a", base / "b"


def _start_tls(lab: Lab, role: str, folder: Path) -> Service:
    svc = start_service(role, lab.log_dir, tls_dir=folder)
    lab.services.append(svc)
    return svc


def control(source: Service, folder: Path | None) -> SourceControl:
    creds = TlsDir(folder).channel_credentials("client") if folder else None
    if creds is None:  # plaintext on purpose: no $MIGBED_TLS_DIR either
        os.environ.pop("MIGBED_TLS_DIR", None)
    return SourceControl(source.address, creds)


def test_certs_command(labs: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = labs
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(["ca.pem", "ca-key.pem", "source.pem", "source-key.pem",
                            "target.pem", "target-key.pem", "client.pem", "client-key.pem"])
    for p in a.glob("*-key.pem"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    ca = x509.load_pem_x509_certificate((a / "ca.pem").read_bytes())
    target = x509.load_pem_x509_certificate((a / "target.pem").read_bytes())
    assert target.issuer == ca.subject
    san = target.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    # It refuses to replace a lab CA by accident, and names the way to do it.
    again = certs(a)
    assert again.returncode == 2 and "--force" in again.stderr
    # --host adds names; a bad one is refused.
    extra = certs(tmp_path / "c", "--host", "target.lab", "--host", "10.9.8.7")
    assert extra.returncode == 0, extra.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "c" / "target.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "target.lab" in san.get_values_for_type(x509.DNSName)
    assert "10.9.8.7" in [str(x) for x in san.get_values_for_type(x509.IPAddress)]
    bad = certs(tmp_path / "d", "--host", "not a host!")
    assert bad.returncode == 2 and "--host" in bad.stderr


def test_mtls_migration_works(lab: Lab, labs: tuple[Path, Path]) -> None:
    a, _ = labs
    target, source = _start_tls(lab, "target", a), _start_tls(lab, "source", a)
    ctl = control(source, a)
    rec = start_run(ctl, GOOD, "switchover-ack", target.address).result(60)
    assert rec.outcome == "completed" and rec.verified, rec.error
    ctl.close()
    # The health check works over TLS, and only over TLS.
    ok = subprocess.run([*CLI, "health", target.address, "--tls-dir", str(a)],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    env = {k: v for k, v in os.environ.items() if k != "MIGBED_TLS_DIR"}
    plain = subprocess.run([*CLI, "health", target.address, "--timeout", "2"],
                           capture_output=True, text=True, timeout=30, env=env)
    assert plain.returncode == 3  # unreachable for a plaintext client (the CLI's exit code 3)
    stop_cleanly(source)
    stop_cleanly(target)


def test_mtls_migration_over_multifd_channels(lab: Lab, labs: tuple[Path, Path]) -> None:
    """RAM on two multifd channels under the same lab's mutual TLS as the main channel."""
    a, _ = labs
    target, source = _start_tls(lab, "target", a), _start_tls(lab, "source", a)
    ctl = control(source, a)
    toml = scenario_toml("tls-multifd", migration={"multifd": True, "multifd-channels": 2})
    rec = start_run(ctl, toml, "switchover-ack", target.address).result(60)
    assert rec.outcome == "completed" and rec.verified, rec.error
    assert rec.multifd_channels == 2 and all(b > 0 for b in rec.multifd_channel_bytes)
    ctl.close()
    stop_cleanly(source)
    stop_cleanly(target)


def test_source_refuses_a_target_of_another_ca(lab: Lab, labs: tuple[Path, Path]) -> None:
    """The issue's test: a TLS source refuses a target whose certificate another CA signed."""
    a, b = labs
    target = _start_tls(lab, "target", b)
    source = _start_tls(lab, "source", a)
    ctl = control(source, a)
    rec = start_run(ctl, GOOD, "legacy", target.address).result(60)
    ctl.close()
    assert rec.outcome == "failed"
    assert "during setup" in rec.error, rec.error
    assert "CERTIFICATE_VERIFY_FAILED" in rec.error, rec.error
    assert "not signed by the CA this side trusts" in rec.error, rec.error
    assert rec.source_guest_running_after and rec.source_integrity_ok
    assert rec.total_time_ms < 20_000
    assert sessions_tls(target, b) == []  # nothing got through to the target
    stop_cleanly(source)
    stop_cleanly(target)


def sessions_tls(svc: Service, folder: Path) -> list[str]:
    with grpc.secure_channel(svc.address, TlsDir(folder).channel_credentials("client")) as ch:
        return list(pbg.ControlStub(ch).Status(pb.StatusRequest(), timeout=5).sessions)


def test_target_refuses_a_source_of_another_ca(lab: Lab, labs: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    """The other direction: the source trusts the target's CA (and its own) but its own
    certificate is of another lab; the target requires client certificates of its CA."""
    a, b = labs
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    # Trusts lab a (the target's) and lab b (its own), but holds certificates of lab b.
    (mixed / "ca.pem").write_bytes((a / "ca.pem").read_bytes() + (b / "ca.pem").read_bytes())
    for f in ("source.pem", "source-key.pem", "client.pem", "client-key.pem"):
        shutil.copy(b / f, mixed / f)
    target = _start_tls(lab, "target", a)
    source = _start_tls(lab, "source", mixed)
    ctl = SourceControl(source.address, TlsDir(mixed).channel_credentials("client"))
    rec = start_run(ctl, GOOD, "legacy", target.address).result(60)
    ctl.close()
    assert rec.outcome == "failed" and "during setup" in rec.error, rec.error
    assert "the target refused this source's certificate" in rec.error, rec.error
    assert rec.source_guest_running_after and rec.source_integrity_ok
    assert sessions_tls(target, a) == []
    stop_cleanly(source)
    stop_cleanly(target)


def test_plaintext_source_refused_by_a_tls_target(lab: Lab, labs: tuple[Path, Path]) -> None:
    a, _ = labs
    target = _start_tls(lab, "target", a)
    source = lab.start("source")
    ctl = control(source, None)
    rec = start_run(ctl, GOOD, "legacy", target.address).result(60)
    ctl.close()
    assert rec.outcome == "failed" and "during setup" in rec.error, rec.error
    assert "is the target serving TLS?" in rec.error, rec.error
    assert rec.source_guest_running_after and rec.source_integrity_ok
    assert sessions_tls(target, a) == []
    stop_cleanly(source)
    stop_cleanly(target)


def test_control_api_requires_a_client_certificate_of_the_lab(lab: Lab,
                                                              labs: tuple[Path, Path]) -> None:
    a, b = labs
    source = _start_tls(lab, "source", a)
    for folder in (None, b):  # plaintext, and a certificate of another lab
        ctl = control(source, folder)
        with pytest.raises(ControlError) as e:
            ctl.status(timeout=5)
        ctl.close()
        assert "UNAVAILABLE" in str(e.value), e.value
    # `migbed cancel` of an operator without the lab's certificate: a clear error, exit 3
    # (the source is unreachable for it).
    env = {k: v for k, v in os.environ.items() if k != "MIGBED_TLS_DIR"}
    out = subprocess.run([*CLI, "cancel", source.address, "x", "--tls-dir", str(b)],
                         capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 3 and "UNAVAILABLE" in out.stderr, out.stderr
    ok = control(source, a)
    assert ok.status(timeout=5).role == "source"
    ok.close()
    stop_cleanly(source)


def test_missing_tls_folder_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "serve", "target", "--listen", f"127.0.0.1:{free_port()}", "--tls-dir",
                          str(tmp_path / "nope")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "migbed certs" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_run_cli_with_tls(tmp_path: Path, labs: tuple[Path, Path]) -> None:
    """`migbed run --tls-dir`: local services with mTLS, the whole CLI path."""
    a, _ = labs
    scen = tmp_path / "s.toml"
    scen.write_text(GOOD)
    out = subprocess.run([*CLI, "run", "--scenario", str(scen), "--policy", "legacy",
                          "--repeat", "1", "--tls-dir", str(a), "--out", str(tmp_path / "o"),
                          "--no-progress", "--no-report"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    (rec,) = json.loads((tmp_path / "o" / "results.json").read_text())
    assert rec["outcome"] == "completed" and rec["verified"]
