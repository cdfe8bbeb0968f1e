"""The service's Ed25519 extract-signing key: created once, kept in a 0600 PEM file.

Owns: creating, loading and fingerprinting the key that signs extract manifests. Must not:
print, log or return the private key material; overwrite an existing key file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mpi.errors import ConfigurationError, InvalidInput


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the signing key from ``path``, creating it (0600, PKCS#8 PEM) the first time."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _create(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigurationError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} does not hold an Ed25519 private key")
    return key


def _create(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return load_or_create_signing_key(path)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public half as SubjectPublicKeyInfo PEM text."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """Parse an Ed25519 public key from PEM; InvalidInput when it is not one."""
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidInput("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("not an Ed25519 public key")
    return key


def key_fingerprint(public_key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """"SHA256:" + hex SHA-256 of the raw 32-byte public key."""
    public = public_key.public_key() if isinstance(public_key, Ed25519PrivateKey) else public_key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()
