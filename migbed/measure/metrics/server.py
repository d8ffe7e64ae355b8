"""The /metrics HTTP endpoint of a service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


class MetricsServer:
    """A running /metrics HTTP server (a daemon thread). ``shutdown()`` stops it."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port: int = int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    close = shutdown

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` (all interfaces) or ``port`` -> (host, port)."""
    listen = listen.strip()
    if listen.startswith("["):
        host, _, rest = listen[1:].partition("]")
        port = rest.removeprefix(":")
    elif ":" in listen:
        host, _, port = listen.rpartition(":")
    else:
        host, port = "", listen
    if not port.isdigit():
        raise ValueError(f"metrics listen address needs a port: {listen!r}")
    return (host or "0.0.0.0"), int(port)


def serve_metrics(registry: CollectorRegistry, listen: str) -> MetricsServer:
    """Serve ``registry`` on ``http://listen/metrics`` (port 0 picks a free port)."""
    host, port = parse_listen(listen)
    return MetricsServer(registry, host, port)
