"""`migbed certs DIR`: a lab CA and the mutual-TLS certificates (migbed/env/certs.py makes them)."""

from __future__ import annotations

import argparse
import sys

from migbed.env.certs import CA_KEY_FILE, DEFAULT_DAYS, CertsError, make_certs
from migbed.env.certs import __doc__ as CERTS_DOC
from migbed.wire.tls import IDENTITIES


def cmd_certs(args: argparse.Namespace) -> int:
    try:
        written = make_certs(args.dir, args.host, args.days, args.force)
    except CertsError as e:
        # Said here: under `python -m migbed.cli.main` the CLI's own UsageError is
        # another class (__main__'s), which main() would not catch.
        print(f"migbed: error: {e}", file=sys.stderr)
        return 2
    for p in written:
        print(p)
    print(f"lab CA and certificates for {', '.join(IDENTITIES)} in {args.dir}; "
          f"keep {CA_KEY_FILE} off the lab hosts")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certs", help="make a lab CA and mTLS certificates",
                       description=CERTS_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="folder to write ca.pem, source/target/client .pem and -key.pem")
    p.add_argument("--host", action="append", default=[],
                   help="a DNS name or IP address the services are dialled at (repeatable)")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS,
                   help=f"validity (default {DEFAULT_DAYS})")
    p.add_argument("--force", action="store_true", help="replace an existing lab CA")
    p.set_defaults(func=cmd_certs)
