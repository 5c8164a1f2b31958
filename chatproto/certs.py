"""A self-signed key and certificate for local TLS: ``python -m chatproto.certs``.

    python -m chatproto.certs [--dir .] [--host localhost] [--days 365]

Writes ``key.pem`` and ``cert.pem``; then
``twistd -n chat --listen ssl:7778:privateKey=key.pem:certKey=cert.pem``.
Clients either trust ``cert.pem`` as their CA file or pin its SHA-256
fingerprint on first use (printed here).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_self_signed(host: str = "localhost", days: int = 365) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) for ``host``, also valid for 127.0.0.1 and ::1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    for address in ("127.0.0.1", "::1"):
        names.append(x509.IPAddress(ipaddress.ip_address(address)))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the DER certificate, as colon-separated hex (what clients pin)."""
    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def write_pair(folder: str, host: str = "localhost", days: int = 365) -> tuple[str, str, bytes]:
    """Write ``key.pem`` (mode 600) and ``cert.pem`` into ``folder``; returns
    their paths and the certificate."""
    os.makedirs(folder, exist_ok=True)
    key_pem, cert_pem = make_self_signed(host, days)
    key_path = os.path.join(folder, "key.pem")
    cert_path = os.path.join(folder, "cert.pem")
    with open(key_path, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(key_pem)
    with open(cert_path, "wb") as f:
        f.write(cert_pem)
    return key_path, cert_path, cert_pem


def write_file(path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file that has ``mode`` from the start (a key
    is never readable by others, not even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def load_or_make(key_path: str, cert_path: str, host: str = "localhost") -> tuple[bytes, bool]:
    """The certificate at ``cert_path``, or (when neither file exists) a new
    self-signed pair written there; and whether it was made now. Reusing
    it keeps the fingerprint that clients pinned on first use.
    ValueError if only one of the two exists."""
    have_key, have_cert = os.path.exists(key_path), os.path.exists(cert_path)
    if have_key != have_cert:
        present, absent = (key_path, cert_path) if have_key else (cert_path, key_path)
        raise ValueError(f"{present!r} exists but {absent!r} does not: give both, or neither")
    if have_cert:
        with open(cert_path, "rb") as f:
            return f.read(), False
    try:
        key_pem, cert_pem = make_self_signed(host)
    except ValueError:  # a host name no certificate can carry
        key_pem, cert_pem = make_self_signed("localhost")
    write_file(key_path, key_pem, 0o600)
    write_file(cert_path, cert_pem, 0o644)
    return cert_pem, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatproto.certs", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=".")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    key_path, cert_path, cert_pem = write_pair(args.dir, args.host, args.days)
    print(f"wrote {key_path} and {cert_path} for {args.host}")
    print(f"SHA-256 fingerprint: {fingerprint(cert_pem)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
