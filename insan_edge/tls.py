"""The gateway's self-signed certificate: made once on the box, pinned by apps by fingerprint.

No certificate authority exists on a home network, so apps do not check names: they compare the
SHA-256 of the certificate with the one the box announces over mDNS (or that a parent copied).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from insan_edge.errors import InsanEdgeError
from insan_edge.files import write_atomic

VALID_DAYS = 3650


class TlsError(InsanEdgeError):
    code = "tls_error"
    status = 500


def make_certificate(cert_file: Path, key_file: Path, name: str) -> str:
    """Write a new key (0600) and self-signed certificate; the certificate's fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(host),
        x509.DNSName(f"{host}.local"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(key_file, key_pem, 0o600)
    write_atomic(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return fingerprint(cert_file)


def fingerprint(cert_file: Path) -> str:
    """SHA-256 of the certificate's DER bytes, as lowercase hex."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot read the certificate {cert_file}: {exc}") from exc
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(
            f"cannot load the certificate {cert_file} with its key {key_file}: {exc}"
            " (make a new pair with 'insan-edge lan cert --force')"
        ) from exc
    return ctx
