"""Offline checks of the Grafana dashboards and provisioning (no Grafana needed).

- the committed JSON is what grafana/build_dashboards.py generates;
- grafana-foundation-sdk's own parser reads each dashboard back unchanged (an unknown or
  misspelt key anywhere in a typed part is dropped by the parser, so the round trip fails),
  every panel type is one the SDK knows, every query decodes as a Prometheus query;
- fixed uids, the ``${datasource}`` variable (defaulting to the provisioned uid) on every
  panel/query/variable/annotation, a unit on every panel, the schemaVersion of the Grafana
  compose.yaml pins, unique panel ids, panels inside the 24-column grid without overlaps;
- every metric a query names is one the exporters export or a recording rule records;
  promtool parses every query.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from obs_promlib import (
    DASHBOARD_DIR,
    PROVISIONING,
    REPO,
    RULES_DIR,
    iter_targets,
    load_dashboards,
    provisioned_datasource_uid,
    require_binary,
)
from obs_synth import feed, make_record
from prometheus_client import generate_latest

from migbed.measure.metrics import SourceMetrics, TargetMetrics

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Grafana release (major.minor) -> the dashboard schemaVersion it writes (Grafana's
# DashboardMigrator). A Grafana bump in compose.yaml fails test_schema_version_matches_
# the_pinned_grafana until this table (and build_dashboards.SCHEMA_VERSION) follow.
GRAFANA_SCHEMA_VERSIONS = {"11.6": 41}
DS_VAR = {"type": "prometheus", "uid": "${datasource}"}

EXPECTED_UIDS = {
    "policy-comparison.json": "migbed-policy-comparison",
    "live-migration.json": "migbed-live-migration",
}


def builder() -> ModuleType:
    path = REPO / "grafana" / "build_dashboards.py"
    spec = importlib.util.spec_from_file_location("migbed_build_dashboards", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_json_is_current() -> None:
    rendered = builder().render()
    assert set(rendered) == {p.name for p in DASHBOARD_DIR.glob("*.json")}
    for name, text in rendered.items():
        assert (DASHBOARD_DIR / name).read_text() == text, (
            f"{name} is stale: run .venv/bin/python grafana/build_dashboards.py"
        )


def test_check_mode_reports_stale(tmp_path: Path) -> None:
    mod = builder()
    assert mod.main(["--out", str(tmp_path)]) == 0
    assert mod.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "live-migration.json").write_text("{}")
    assert mod.main(["--check", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", sorted(EXPECTED_UIDS))
def test_sdk_parses_dashboard_back_unchanged(name: str) -> None:
    from grafana_foundation_sdk.cog import runtime as cogruntime
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import dashboard as dm
    from grafana_foundation_sdk.models import prometheus as pm

    register_default_plugins()
    data = json.loads((DASHBOARD_DIR / name).read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = dm.Dashboard.from_json(json.loads(json.dumps(data)))
    again = json.loads(JSONEncoder(sort_keys=True).encode(model))
    assert again == data
    assert model.panels
    for panel in model.panels:
        if isinstance(panel, dm.RowPanel):
            continue
        assert cogruntime.panelcfg_config(panel.type_val) is not None, panel.type_val
        assert panel.targets
        for t in panel.targets:
            assert isinstance(t, pm.Dataquery), (panel.title, type(t))


def test_sdk_parser_catches_a_misspelt_key() -> None:
    """The round trip above is a real check: a typo does not survive it."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import dashboard as dm

    register_default_plugins()
    data = json.loads((DASHBOARD_DIR / "live-migration.json").read_text())
    panel = next(p for p in data["panels"] if p["type"] == "timeseries")
    panel["options"]["legend"]["placment"] = "bottom"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = dm.Dashboard.from_json(data)
    assert json.loads(JSONEncoder().encode(model)) != data


@pytest.mark.parametrize("name", sorted(EXPECTED_UIDS))
def test_structure(name: str) -> None:
    board = json.loads((DASHBOARD_DIR / name).read_text())
    ds_uid, _ = provisioned_datasource_uid()
    assert board["uid"] == EXPECTED_UIDS[name]
    assert 8 <= len(board["uid"]) <= 40
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    panels = board["panels"]
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"] == DS_VAR, p["title"]
            assert p["title"] and p.get("targets"), p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
            assert all(t["datasource"] == DS_VAR for t in p["targets"]), p["title"]
            assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']} has no unit"
    variables = board["templating"]["list"]
    ds_var = variables[0]
    assert (ds_var["name"], ds_var["type"], ds_var["query"]) == ("datasource", "datasource", "prometheus")
    assert ds_var["current"]["value"] == ds_uid  # defaults to the provisioned datasource
    for var in variables[1:]:
        assert var["datasource"] == DS_VAR, var["name"]
    for ann in board["annotations"]["list"]:
        assert ann["datasource"] == DS_VAR
        assert ann["useValueForTime"] is True  # the value is the event's time
    # the provisioned uid only as the variable's default, never hard-coded elsewhere
    assert json.dumps(board).count(ds_uid) == 1


def test_schema_version_matches_the_pinned_grafana() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    image = compose["services"]["grafana"]["image"]
    m = re.search(r"grafana(?:-oss)?:(\d+\.\d+)\.\d+", image)
    assert m, f"no pinned Grafana version in compose.yaml: {image}"
    want = GRAFANA_SCHEMA_VERSIONS.get(m.group(1))
    assert want is not None, f"Grafana {m.group(1)}: add its schemaVersion to GRAFANA_SCHEMA_VERSIONS"
    for name, board in load_dashboards().items():
        assert board["schemaVersion"] == want, name


def test_live_view_marks_ack_stop_resume() -> None:
    board = json.loads((DASHBOARD_DIR / "live-migration.json").read_text())
    exprs = " ".join(a["expr"] for a in board["annotations"]["list"])
    for metric in (
        "migbed_source_last_switchover_ack_timestamp_seconds",
        "migbed_source_last_stop_timestamp_seconds",
        "migbed_target_last_resume_timestamp_seconds",
    ):
        assert metric in exprs


def recorded_names() -> set[str]:
    names = set()
    for path in RULES_DIR.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def exported_names() -> set[str]:
    src, tgt = SourceMetrics(), TargetMetrics()
    feed([make_record("switchover-ack", 0)], src, tgt)
    names = set()
    for reg in (src.registry, tgt.registry):
        for line in generate_latest(reg).decode().splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def all_exprs() -> list[tuple[str, str, str]]:
    out = []
    for name, board in load_dashboards().items():
        for title, t in iter_targets(board):
            out.append((name, title, t["expr"]))
        for ann in board["annotations"].get("list", []):
            out.append((name, "annotation " + ann["name"], ann["expr"]))
        for var in board["templating"]["list"]:
            out.append((name, "variable " + var["name"], var["query"]))
    return out


def test_every_metric_in_a_query_is_exported() -> None:
    exported = exported_names()
    recorded = recorded_names()
    for board, title, expr in all_exprs():
        for metric in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", expr):
            assert metric in recorded, f"{board} / {title}: {metric} is not recorded by prometheus/rules"
        for metric in re.findall(r"(?<![:\w])(?:migbed|process|python)_[a-z0-9_]+\b(?!:)", expr):
            assert metric in exported, f"{board} / {title}: {metric} is not exported"


def _as_promql(expr: str) -> str:
    expr = expr.replace("$__rate_interval", "4s").replace("$__interval", "1s")
    return re.sub(r"\$\w+", ".*", expr)


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rules: list[dict[str, Any]] = []
    for i, (_, _, expr) in enumerate(all_exprs()):
        if expr.startswith("label_values("):
            continue  # a Grafana function, resolved by the datasource, not PromQL
        rules.append({"record": f"migbed:dashboard_query_{i}", "expr": _as_promql(expr)})
    path = tmp_path / "queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(rules)} rules found" in res.stdout


def test_provisioning_files() -> None:
    ds = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (only,) = ds["datasources"]
    assert only["uid"] == "migbed-prometheus"
    assert only["type"] == "prometheus"
    assert only["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((PROVISIONING / "dashboards" / "migbed.yaml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
