"""The lab's TLS: the names each service certificate must carry, and a lab CA with
certificates kept while they still fit (migbed/env/certs.py makes them)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from migbed.env.ansible import DeployError, Inventory


def tls_hosts(inv: Inventory, extravars: Mapping[str, Any]) -> list[str]:
    """The names and addresses the services are dialled at: each certificate's SANs.

    For every source and target host its inventory name, ansible_host and migbed_lab_address
    (when the inventory or -e sets it to a plain value, not a template). Names that are not a
    DNS name or an IP address (an inventory name with '_') cannot be dialled and are left out.
    """
    from migbed.env.certs import CertsError, _check_host

    found: list[str] = []
    for host in [*inv.hosts("source"), *inv.hosts("target")]:
        hv = inv.hostvars.get(host, {})
        for value in (host, hv.get("ansible_host"), extravars.get("migbed_lab_address", hv.get("migbed_lab_address"))):
            if not isinstance(value, str) or not value or "{" in value:
                continue
            try:
                name = _check_host(value.strip())
            except CertsError:
                continue
            if name not in found:
                found.append(name)
    return found


def _san_names(cert_path: Path) -> tuple[set[str], float]:
    """The SANs of a certificate (IPs normalised) and the seconds until it expires."""
    import datetime as dt

    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    left = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds()
    return names, left


def _normal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def lab_certs(folder: Path, hosts: Sequence[str], out: TextIO) -> bool:
    """Make the lab CA and certificates in `folder` unless the ones there still fit; True if made.

    Certificates are reused while every file is there, the source and target certificates
    name every host in `hosts` and they are valid for more than a day; otherwise a new CA
    and new certificates replace them all (the services restart with them).
    """
    from migbed.env.certs import CA_KEY_FILE, CertsError, make_certs
    from migbed.wire.tls import CA_FILE, IDENTITIES, cert_file, key_file

    files = [CA_FILE, CA_KEY_FILE, *(f for i in IDENTITIES for f in (cert_file(i), key_file(i)))]
    why = "none yet"
    if all((folder / f).is_file() for f in files):
        why = ""
        wanted = {_normal(h) for h in hosts}
        for role in ("source", "target"):
            try:
                names, left = _san_names(folder / cert_file(role))
            except (ValueError, OSError) as e:
                why = f"{cert_file(role)} unreadable ({e})"
                break
            if wanted - names:
                why = f"new hosts {', '.join(sorted(wanted - names))}"
                break
            if left < 86400:
                why = f"{cert_file(role)} expires within a day"
                break
        if not why:
            return False
    try:
        make_certs(folder, hosts, force=True)
    except CertsError as e:
        raise DeployError(f"TLS certificates in {folder}: {e}") from None
    print(f"tls: a new lab CA and certificates in {folder} ({why})", file=out, flush=True)
    return True
