"""multifd channels under the same mutual TLS as the main channel, between real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from migbed.env.certs import make_certs
from migbed.experiments.comparison import Plan, run_plan
from migbed.experiments.localstack import local_stack
from migbed.wire.tls import ENV_TLS_DIR

SCENARIO = """
name = "multifd-tls"
[guest]
ram-size = "32MiB"
dirty-rate = "4MiB/s"
[[device]]
name = "vf0"
initial-bytes = "4MB"
stop-copy-size = "1MB"
[migration]
multifd = true
warmup = "100ms"
"""


def test_multifd_over_tls_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = tmp_path / "tls"
    make_certs(tls)
    monkeypatch.setenv(ENV_TLS_DIR, str(tls))  # the Control client's credentials
    with local_stack(tmp_path / "logs", tls_dir=tls) as (source, target):
        [r] = run_plan(Plan("multifd-tls", SCENARIO, ["legacy"], 1, source.address,
                            target.address), show_progress=False)
    assert r.outcome == "completed" and r.verified, r.error
    assert r.multifd_channels == 2 and all(b > 0 for b in r.multifd_channel_bytes)
    # The channels carried at least every page once (plus TLS framing is not counted).
    assert sum(r.multifd_channel_bytes) >= r.ram_transferred_bytes >= 32 << 20
