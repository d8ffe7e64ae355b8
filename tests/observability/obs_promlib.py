"""Test helpers: a real Prometheus server, promtool, and a stand-in for Grafana's query path.

Prometheus and promtool are Debian's binaries (``apt-get install -y prometheus``). Under CI
(``CI=true``) a missing binary fails the test; on a developer machine it skips it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = REPO / "prometheus" / "prometheus.yml"
RULES_DIR = REPO / "prometheus" / "rules"
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
PROVISIONING = REPO / "grafana" / "provisioning"

T = TypeVar("T")


def require_binary(name: str) -> str:
    """Path of a Prometheus binary; when missing, fail under CI=true or MIGBED_REQUIRE_ALL=1
    (bin/test sets it), else skip."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} not found: apt-get install -y prometheus (Debian's package ships {name})"
    required = (os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("CI", "MIGBED_REQUIRE_ALL"))
    if any(required):
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def promtool_check_metrics(exposition: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition (lint: naming, units, HELP, types)."""
    return subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )


def scrape_config_for(targets: dict[str, list[str]], base: Path = PROMETHEUS_YML) -> dict[str, Any]:
    """The committed prometheus.yml with its migbed jobs pointed at ``targets``.

    ``targets`` maps job name (``migbed-source``, ``migbed-target``) to ``host:port`` lists;
    every other setting (intervals, labels, the rule files: recording rules and alerts) stays
    as committed, so tests exercise it.
    """
    cfg: dict[str, Any] = yaml.safe_load(base.read_text())
    # rule files are relative to the config's folder: point them at the repo's
    assert cfg.get("rule_files"), "prometheus.yml loads no rule files"
    cfg["rule_files"] = [str(base.parent / f) for f in cfg["rule_files"]]
    jobs = []
    for job in cfg["scrape_configs"]:
        name = job["job_name"]
        if name == "prometheus":
            continue  # points at :9090 in compose; the test server scrapes nothing else
        if name in targets:
            for sc in job["static_configs"]:
                sc["targets"] = targets[name]
        jobs.append(job)
    missing = set(targets) - {j["job_name"] for j in jobs}
    assert not missing, f"prometheus.yml has no job {missing}"
    cfg["scrape_configs"] = jobs
    return cfg


class Prometheus:
    """A real Prometheus server on a free loopback port with its own storage directory."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.binary = require_binary("prometheus")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        self.started = time.time()
        wait_for("Prometheus /-/ready", self._ready, timeout=60)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    # -- HTTP API
    def api(self, path: str, **params: Any) -> Any:
        data = urllib.parse.urlencode(params, doseq=True).encode()
        req = urllib.request.Request(self.url + "/api/v1/" + path, data=data, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path} {params}: {exc.read().decode()}") from exc
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", **params)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=start, end=end, step=step)
        return list(data["result"])

    def value(self, expr: str) -> float:
        """The single value of an instant query (fails unless exactly one series)."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: expected one series, got {result}"
        return float(result[0]["value"][1])

    def values_by(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api_get("targets")["activeTargets"])

    def api_get(self, path: str) -> Any:
        body = json.loads(http_get(self.url + "/api/v1/" + path))
        return body["data"]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (recording and alerting), with its health."""
        return [r for g in self.api_get("rules")["groups"] for r in g["rules"]]

    def label_values(self, label: str, match: str) -> list[str]:
        path = f"label/{label}/values?" + urllib.parse.urlencode({"match[]": match})
        return list(self.api_get(path))

    def wait_value(self, expr: str, want: Callable[[float], bool], what: str, timeout: float = 30.0) -> float:
        def check() -> float | None:
            r = self.query(expr)
            if len(r) == 1 and want(float(r[0]["value"][1])):
                return float(r[0]["value"][1]) or 1e-300
            return None

        return wait_for(f"{what}: {expr}", check, timeout=timeout)


# --------------------------------------------------------------------------------------
# A stand-in for Grafana (no Grafana build exists on these machines): it follows what
# Grafana does with a provisioned dashboard: resolve the datasource by uid from the
# provisioning file, resolve query variables with label_values(), interpolate $variables,
# and run each panel target and annotation against Prometheus.
# --------------------------------------------------------------------------------------

VAR_RE = re.compile(r"\$(\w+)|\$\{(\w+)\}|\[\[(\w+)\]\]")
LABEL_VALUES_RE = re.compile(r"^label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)$")
LEGEND_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str  # as interpolated
    instant: bool
    legend: str
    annotation: bool = False


def provisioned_datasource_uid() -> tuple[str, str]:
    ds = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (only,) = ds["datasources"]
    return str(only["uid"]), str(only.get("jsonData", {}).get("timeInterval", "15s"))


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def _seconds(d: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", d)
    assert m, d
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def iter_targets(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in board.get("panels", []):
        for sub in [panel, *panel.get("panels", [])]:
            for t in sub.get("targets", []) or []:
                yield sub["title"], t


class FakeGrafana:
    def __init__(self, prom: Prometheus) -> None:
        self.prom = prom
        self.ds_uid, time_interval = provisioned_datasource_uid()
        self.scrape = _seconds(time_interval)

    def resolve_variables(self, board: dict[str, Any]) -> dict[str, str]:
        values: dict[str, str] = {}
        for var in board.get("templating", {}).get("list", []):
            if var["type"] == "datasource":
                # the only Prometheus datasource is the provisioned one: Grafana picks it
                assert var["query"] == "prometheus", var
                values[var["name"]] = self.ds_uid
                continue
            assert var["type"] == "query", var
            assert self.interpolate(var["datasource"]["uid"], values) == self.ds_uid
            m = LABEL_VALUES_RE.match(var["query"] if isinstance(var["query"], str) else "")
            assert m, f"unsupported variable query {var['query']!r}"
            match, label = m.group(1), m.group(2)
            opts = self.prom.label_values(label, match) if match else []
            assert opts, f"variable ${var['name']}: label_values({match}, {label}) is empty"
            # "All" as Grafana sends it with allValue set; else the first option
            if var.get("includeAll"):
                alternatives = "(" + "|".join(re.escape(o) for o in opts) + ")"
                values[var["name"]] = var.get("allValue") or alternatives
            else:
                values[var["name"]] = opts[0]
        return values

    def interpolate(self, expr: str, variables: dict[str, str]) -> str:
        builtins = {
            "__rate_interval": f"{int(4 * self.scrape)}s",
            "__interval": f"{int(self.scrape)}s",
            "__range": "1h",
        }

        def sub(m: re.Match[str]) -> str:
            name = next(g for g in m.groups() if g)
            if name in variables:
                return variables[name]
            if name in builtins:
                return builtins[name]
            raise AssertionError(f"unknown variable ${name} in {expr!r}")

        return VAR_RE.sub(sub, expr)

    def queries(self, name: str, board: dict[str, Any]) -> list[PanelQuery]:
        variables = self.resolve_variables(board)
        out = []
        for title, t in iter_targets(board):
            assert self.interpolate(t["datasource"]["uid"], variables) == self.ds_uid, (title, t["datasource"])
            out.append(
                PanelQuery(
                    name,
                    title,
                    t.get("refId", ""),
                    self.interpolate(t["expr"], variables),
                    bool(t.get("instant")) and not t.get("range"),
                    t.get("legendFormat", ""),
                )
            )
        for ann in board.get("annotations", {}).get("list", []):
            if ann.get("builtIn"):
                continue
            assert self.interpolate(ann["datasource"]["uid"], variables) == self.ds_uid
            out.append(
                PanelQuery(
                    name,
                    "annotation: " + ann["name"],
                    "",
                    self.interpolate(ann["expr"], variables),
                    False,
                    ann.get("titleFormat", ""),
                    annotation=True,
                )
            )
        return out

    def run(self, q: PanelQuery, start: float, end: float) -> list[dict[str, Any]]:
        """Series with at least one finite value, as the panel would show them."""
        if q.instant:
            res = self.prom.query(q.expr, at=end)
            series = [r for r in res if math.isfinite(float(r["value"][1]))]
        else:
            res = self.prom.query_range(q.expr, start, end, step=self.scrape)
            series = [r for r in res if any(math.isfinite(float(v)) for _, v in r["values"])]
        return series


def check_dashboards_have_data(
    prom: Prometheus, timeout: float = 30.0, skip_metrics: frozenset[str] = frozenset()
) -> int:
    """Run every panel query and annotation as Grafana would; return how many ran.

    Polls (rate() needs two scrapes of a counter) until all have data or ``timeout``.
    Queries naming one of ``skip_metrics`` are left out.
    """
    grafana = FakeGrafana(prom)
    queries = []
    for name, board in load_dashboards().items():
        queries.extend(grafana.queries(name, board))
    queries = [q for q in queries if not any(m in q.expr for m in skip_metrics)]
    deadline = time.monotonic() + timeout
    while True:
        end = time.time()
        empty = [q for q in queries if not grafana.run(q, prom.started, end)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not empty, "queries without data:\n" + "\n".join(
        f"{q.dashboard} / {q.panel} [{q.ref}]: {q.expr}" for q in empty
    )
    start = prom.started
    for q in queries:
        series = grafana.run(q, start, end)
        # every {{label}} of the legend is on the series
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", q.legend):
            assert all(label in s["metric"] for s in series), (q.panel, label, series[0])
        if q.annotation:  # values are event times in ms, inside the shown range
            vals = [float(v) for s in series for _, v in s["values"]]
            assert all(start * 1000 - 600_000 < v <= end * 1000 + 1 for v in vals), q.panel
    return len(queries)
