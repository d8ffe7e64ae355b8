"""Measure TCP goodput between two hosts (containers): a tiny iperf with the stdlib only.

    python -m migbed.env.goodput recv --listen 0.0.0.0:5201
    python -m migbed.env.goodput send --to target:5201 --seconds 5

The receiver counts payload bytes as they arrive and, when the sender closes its side,
answers with its measurement on the same connection; the sender prints one JSON object.
The receiver's count is the one that matters: the sender's send() returns as soon as data is
in its socket buffer, so its own rate overstates the link at the start. The first
``--warmup`` seconds (TCP slow start, tbf's initial burst) are left out of the rate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import time
from dataclasses import asdict, dataclass

CHUNK = 256 * 1024


@dataclass
class Measurement:
    bytes_total: int  # payload bytes received over the whole connection
    seconds_total: float  # first byte to last byte
    bytes_measured: int  # after the warm-up
    seconds_measured: float
    goodput_bps: float  # payload bits/s after the warm-up


def _hostport(text: str) -> tuple[str, int]:
    """The one HOST:PORT parser (migbed/core/address.py), as argparse wants it."""
    from migbed.core.address import AddressError, HostPort

    try:
        hp = HostPort.parse(text, "HOST:PORT")
    except AddressError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return hp.host, hp.port


def receive_one(conn: socket.socket, warmup_s: float) -> Measurement:
    buf = bytearray(1 << 20)
    total = 0
    t_first = t_last = 0.0
    mark_t: float | None = None
    mark_bytes = 0
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        now = time.monotonic()
        if total == 0:
            t_first = now
        elif mark_t is None and now - t_first >= warmup_s:
            # Bytes counted up to here belong to the warm-up.
            mark_t, mark_bytes = now, total
        total += n
        t_last = now
    if mark_t is None or t_last <= mark_t:
        raise RuntimeError(f"transfer too short for a {warmup_s} s warm-up ({total} bytes)")
    measured = total - mark_bytes
    seconds = t_last - mark_t
    return Measurement(
        bytes_total=total,
        seconds_total=t_last - t_first,
        bytes_measured=measured,
        seconds_measured=seconds,
        goodput_bps=measured * 8 / seconds,
    )


def serve(listen: tuple[str, int], warmup_s: float, count: int) -> None:
    """Answer ``count`` senders (0: forever), one at a time."""
    with socket.create_server(listen, reuse_port=False) as srv:
        print(f"goodput: listening on {listen[0]}:{listen[1]}", file=sys.stderr, flush=True)
        done = 0
        while count == 0 or done < count:
            conn, peer = srv.accept()
            with conn:
                try:
                    m = receive_one(conn, warmup_s)
                    reply = {"ok": True, **asdict(m)}
                except (RuntimeError, OSError) as e:
                    reply = {"ok": False, "error": str(e)}
                print(json.dumps({"peer": f"{peer[0]}:{peer[1]}", **reply}), flush=True)
                # A sender that is gone still leaves the result printed above.
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")
            done += 1


def send(to: tuple[str, int], seconds: float, connect_timeout_s: float = 10.0) -> dict[str, object]:
    payload = memoryview(bytes(CHUNK))
    deadline = time.monotonic() + connect_timeout_s
    while True:
        # The receiver may still be starting: retry the connect for a bounded time.
        try:
            sock = socket.create_connection(to, timeout=connect_timeout_s)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sock:
        sock.settimeout(max(30.0, seconds * 4))
        t0 = time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        sent_s = time.monotonic() - t0
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    result: dict[str, object] = json.loads(reply) if reply else {"ok": False, "error": "no reply"}
    result["sender_seconds"] = sent_s
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m migbed.env.goodput", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv", help="receive and measure")
    r.add_argument("--listen", type=_hostport, default=("0.0.0.0", 5201))
    r.add_argument("--warmup", type=float, default=0.5, help="seconds left out (default 0.5)")
    r.add_argument("--count", type=int, default=0, help="senders to answer, 0 = forever")
    s = sub.add_parser("send", help="send for a while, print the receiver's measurement")
    s.add_argument("--to", type=_hostport, required=True)
    s.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    if args.cmd == "recv":
        serve(args.listen, args.warmup, args.count)
        return 0
    result = send(args.to, args.seconds)
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
