"""Self-signed TLS material for ``mpi serve``: a local CA and a server certificate it signs.

Owns: generating (once) and locating the CA and server certificate in ``<data_dir>/tls``, and
the TLS 1.2 cipher list the server allows (``TLS12_CIPHERS``).
Must not: overwrite existing material or log key bytes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mpi.files import private_dir, write_private

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
"""OpenSSL cipher list for TLS 1.2: forward-secret AEAD suites only (no CBC, no static RSA).
TLS 1.3 suites are all AEAD and are not governed by this list."""


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the CA certificate, server certificate and server key."""

    ca_cert: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mpi"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def ensure_self_signed(tls_dir: Path, *, hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
                       now: dt.datetime | None = None) -> tuple[TlsFiles, bool]:
    """Create a CA and server certificate in ``tls_dir`` unless present; (files, created)."""
    files = TlsFiles(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server.key")
    if files.ca_cert.exists() and files.cert.exists() and files.key.exists():
        return files, False
    private_dir(tls_dir)
    now = now or dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("mpi local CA")).issuer_name(_name("mpi local CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_private(files.ca_cert, ca.public_bytes(serialization.Encoding.PEM))  # 0600 too (0066)
    write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    write_private(files.key, key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    write_private(tls_dir / "ca.key", ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return files, True
