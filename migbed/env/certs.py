"""`migbed certs DIR`: a lab CA and the mutual-TLS certificates of source, target and client.

  migbed certs lab-tls --host source.lab --host 10.0.0.7
  migbed serve target --listen 10.0.0.7:50051 --tls-dir lab-tls     (target.pem, target-key.pem, ca.pem)
  migbed serve source --listen 127.0.0.1:50052 --tls-dir lab-tls    (source.*, ca.pem)
  migbed run --source 127.0.0.1:50052 --target 10.0.0.7:50051 --tls-dir lab-tls (client.*, ca.pem)

Every certificate names localhost, 127.0.0.1, ::1, its role ("source", "target": the
compose service names) and each --host (a DNS name or an IP address): a client checks the
address it dials against them. Keys are ECDSA P-256, written 0600. ca-key.pem stays with
whoever makes certificates; hosts need only ca.pem and their own pair. A lab CA, not a
PKI: no revocation; make a new folder (a new CA) to revoke everything at once.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from migbed.wire.tls import CA_FILE, IDENTITIES, cert_file, key_file

CA_KEY_FILE = "ca-key.pem"
DEFAULT_DAYS = 825


class CertsError(ValueError):
    pass


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "migbed lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(role: str, hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(role),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(h))
    seen: list[x509.GeneralName] = []
    for n in names:  # a name given twice would be in the certificate twice
        if n not in seen:
            seen.append(n)
    return x509.SubjectAlternativeName(seen)


def _check_host(h: str) -> str:
    try:
        ipaddress.ip_address(h.strip("[]"))
        return h
    except ValueError:
        pass
    labels = h.split(".")
    if not h or len(h) > 253 or not all(
            0 < len(x) <= 63 and x.replace("-", "").isalnum() and not x.startswith("-")
            for x in labels):
        raise CertsError(f"--host {h!r}: not a DNS name or an IP address")
    return h


def _write(path: Path, data: bytes, private: bool) -> None:
    # A key is never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600 if private else 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_certs(folder: str | os.PathLike[str], hosts: Sequence[str] = (),
               days: int = DEFAULT_DAYS, force: bool = False) -> list[Path]:
    """Write a new lab CA and a certificate per identity into `folder`; the paths written."""
    out = Path(folder)
    hosts = _checked_request(out, hosts, days, force)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    # A random suffix: two labs never share a CA name, so a mix-up shows in the error.
    ca = _ca_cert(ca_key, _name(f"migbed lab CA {secrets.token_hex(4)}"), start, end)
    _write(out / CA_KEY_FILE, _key_pem(ca_key), private=True)
    _write(out / CA_FILE, ca.public_bytes(serialization.Encoding.PEM), private=False)
    written = [out / CA_FILE, out / CA_KEY_FILE]

    for role in IDENTITIES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _identity_cert(role, hosts, key, ca_key, ca, start, end)
        _write(out / key_file(role), _key_pem(key), private=True)
        _write(out / cert_file(role), cert.public_bytes(serialization.Encoding.PEM),
               private=False)
        written += [out / cert_file(role), out / key_file(role)]
    return written


def _checked_request(out: Path, hosts: Sequence[str], days: int, force: bool) -> list[str]:
    """The hosts, checked; CertsError for a bad --days or host, or files --force would replace."""
    if not 1 <= days <= 3650:
        raise CertsError(f"--days {days}: 1 .. 3650")
    checked = [_check_host(h) for h in hosts]
    files = [CA_FILE, CA_KEY_FILE, *(f for i in IDENTITIES for f in (cert_file(i), key_file(i)))]
    existing = [f for f in files if (out / f).exists()]
    if existing and not force:
        raise CertsError(f"{out} already has {', '.join(existing)}: use --force to replace "
                         "the lab CA and every certificate (old ones stop working)")
    return checked


def _ca_cert(ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, start: dt.datetime,
             end: dt.datetime) -> x509.Certificate:
    """The lab CA: self-signed, signs leaf certificates only (path length 0)."""
    return (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))


def _identity_cert(role: str, hosts: Sequence[str], key: ec.EllipticCurvePrivateKey,
                   ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, start: dt.datetime,
                   end: dt.datetime) -> x509.Certificate:
    """ROLE's certificate, signed by the lab CA, valid for its names and the hosts."""
    # source and target are servers and clients (the source dials the target).
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role != "client":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (x509.CertificateBuilder().subject_name(_name(f"migbed {role}"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(_san(role, hosts), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
