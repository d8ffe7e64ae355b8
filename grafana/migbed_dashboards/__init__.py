"""migbed's Grafana dashboards as code, one module per dashboard (grafana/build_dashboards.py)."""
