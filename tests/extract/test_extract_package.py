"""The signed extract package and ``mpi extract verify`` (issue #5): every one-byte change is named."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mpi.cli.main import app
from mpi.errors import ConfigurationError, InvalidInput
from mpi.extract.package import MANIFEST, PUBLIC_KEY, SIGNATURE, verify_package, write_package
from mpi.extract.signing import key_fingerprint, load_or_create_signing_key, public_key_pem

FILES = {
    "data.csv": b"person_id,a.sex\np_aaaa,F\np_bbbb,M\n" * 50,
    "data.parquet": bytes(range(256)) * 8,
    "dictionary.json": b'{"attributes": []}\n',
    "dictionary.md": b"# Dictionary\n",
    "disclosure_report.json": b'{"k": 5}\n',
    "linkage_quality.json": b'{"model": "default-v001"}\n',
}
MEMBERS = [MANIFEST, SIGNATURE, PUBLIC_KEY, *sorted(FILES)]
runner = CliRunner()


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def package(keydir: Path) -> Path:
    key = load_or_create_signing_key(keydir / "signing.pem")
    path = keydir / "extract.zip"
    write_package(path, FILES, signing_key=key, metadata={"extract_id": "x-1"})
    return path


def rewrite(src: Path, dst: Path, change: Callable[[str, bytes], bytes | None],
            extra: dict[str, bytes] | None = None) -> None:
    """Copy a package member by member (same zip metadata), changing contents on the way."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info, data)
        for name, data in (extra or {}).items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr, info.compress_type = 0o100644 << 16, zipfile.ZIP_DEFLATED
            zout.writestr(info, data)


def flip(target: str, position: int, xor: int = 1) -> Callable[[str, bytes], bytes | None]:
    def change(name: str, data: bytes) -> bytes:
        if name != target:
            return data
        b = bytearray(data)
        b[position % len(b)] ^= xor
        return bytes(b)
    return change


def cli_verify(path: Path, *extra: str) -> tuple[int, str]:
    res = runner.invoke(app, ["extract", "verify", str(path), *extra])
    return res.exit_code, res.output


def test_signing_key_created_once_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "signing.pem"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_or_create_signing_key(path)
    assert key_fingerprint(again.public_key()) == key_fingerprint(key.public_key())
    assert key_fingerprint(key).startswith("SHA256:") and len(key_fingerprint(key)) == 71
    assert "PRIVATE" not in public_key_pem(key)
    path.write_text("not a key")
    with pytest.raises(ConfigurationError):
        load_or_create_signing_key(path)


def test_package_is_deterministic_and_verifies(keydir: Path, package: Path) -> None:
    key = load_or_create_signing_key(keydir / "signing.pem")
    again = keydir / "again.zip"
    sha = write_package(again, FILES, signing_key=key, metadata={"extract_id": "x-1"})
    assert again.read_bytes() == package.read_bytes()
    with zipfile.ZipFile(package) as zf:
        assert [i.filename for i in zf.infolist()] == MEMBERS
        manifest = json.loads(zf.read(MANIFEST))
    assert [f["name"] for f in manifest["files"]] == sorted([PUBLIC_KEY, *FILES])
    check = verify_package(package, public_key_pem=public_key_pem(key))
    assert check.ok and check.signature_ok and check.files == len(FILES) + 1
    assert check.manifest_sha256 == sha and check.fingerprint == key_fingerprint(key)
    code, out = cli_verify(package)
    assert code == 0 and "OK" in out
    code, out = cli_verify(package, "--public-key", str(keydir / "trusted.pem"))
    assert code == 2 and "does not exist" in out     # the key file does not exist yet
    (keydir / "trusted.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    code, out = cli_verify(package, "--public-key", str(keydir / "trusted.pem"))
    assert code == 2 and "not an Ed25519 public key" in out
    code, out = cli_verify(keydir / "no-such.zip")
    assert code == 2 and "does not exist" in out
    (keydir / "trusted.pem").write_text(public_key_pem(key))
    code, out = cli_verify(package, "--public-key", str(keydir / "trusted.pem"))
    assert code == 0 and "trusted key" in out


@pytest.mark.parametrize("target", MEMBERS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_one_byte_changed_in_any_member_is_named(package: Path, tmp_path: Path, target: str,
                                                 where: str) -> None:
    with zipfile.ZipFile(package) as zf:
        size = len(zf.read(target))
    position = {"first": 0, "middle": size // 2, "last": size - 1}[where]
    bad = tmp_path / "bad.zip"
    rewrite(package, bad, flip(target, position))
    check = verify_package(bad)
    assert not check.ok
    assert check.altered == [target], (target, position, check)
    code, out = cli_verify(bad)
    assert code == 1
    assert f"ALTERED: {target}" in out and "FAILED" in out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(MEMBERS), position=st.integers(0, 10_000), xor=st.integers(1, 255))
def test_any_byte_any_value_changed_is_named(package: Path, tmp_path: Path, target: str, position: int,
                                             xor: int) -> None:
    bad = tmp_path / f"bad-{target}.zip"
    rewrite(package, bad, flip(target, position, xor))
    check = verify_package(bad)
    assert not check.ok and check.altered == [target], check


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 100_000), xor=st.integers(1, 255))
def test_raw_byte_flip_in_the_zip_never_passes_with_changed_content(package: Path, tmp_path: Path,
                                                                    position: int, xor: int) -> None:
    raw = bytearray(package.read_bytes())
    raw[position % len(raw)] ^= xor
    bad = tmp_path / "raw.zip"
    bad.write_bytes(bytes(raw))
    check = verify_package(bad)
    if check.ok:   # only a byte the zip reader ignores (e.g. a local-header copy) may pass,
        with zipfile.ZipFile(bad) as zb, zipfile.ZipFile(package) as zp:   # and then nothing changed
            assert {i.filename: zb.read(i) for i in zb.infolist()} == {
                i.filename: zp.read(i) for i in zp.infolist()}


def test_a_member_flagged_encrypted_is_reported_not_raised(package: Path, tmp_path: Path) -> None:
    """Tampering that sets a central-directory entry's 'encrypted' flag made zipfile raise
    RuntimeError out of verify_package (found by the byte-flip property test)."""
    raw = bytearray(package.read_bytes())
    central = raw.find(b"PK\x01\x02")
    assert central > 0
    raw[central + 8] |= 0x01  # general purpose bit flag, bit 0: encrypted
    bad = tmp_path / "encrypted.zip"
    bad.write_bytes(bytes(raw))
    check = verify_package(bad)
    assert not check.ok and check.altered


def test_a_zip_claiming_an_unknown_version_is_reported_not_raised(package: Path,
                                                                 tmp_path: Path) -> None:
    """A central-directory 'version needed to extract' above what zipfile reads made opening
    the archive raise NotImplementedError (found by the byte-flip property test)."""
    raw = bytearray(package.read_bytes())
    central = raw.find(b"PK\x01\x02")
    raw[central + 6:central + 8] = (84).to_bytes(2, "little")
    bad = tmp_path / "version.zip"
    bad.write_bytes(bytes(raw))
    check = verify_package(bad)
    assert not check.ok and check.problems == ["not a readable zip archive"]


def test_signature_from_another_key_is_refused(package: Path, tmp_path: Path) -> None:
    other = load_or_create_signing_key(tmp_path / "other.pem")
    # a forger re-signs the manifest with their own key and swaps the key in the package
    with zipfile.ZipFile(package) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    forged = tmp_path / "forged.zip"
    write_package(forged, {n: b for n, b in members.items() if n not in (MANIFEST, SIGNATURE, PUBLIC_KEY)},
                  signing_key=other, metadata={"extract_id": "x-1"})
    assert verify_package(forged).ok   # self-consistent: integrity only, without a trusted key
    trusted = tmp_path / "trusted.pem"
    trusted.write_text(members[PUBLIC_KEY].decode())
    check = verify_package(forged, public_key_pem=trusted.read_text())
    assert not check.ok and not check.signature_ok
    assert any("not the trusted public key" in p for p in check.problems)
    code, out = cli_verify(forged, "--public-key", str(trusted))
    assert code == 1 and "BAD SIGNATURE" in out
    # a signature made by another key over the genuine manifest names manifest.sig
    sig = json.loads(members[SIGNATURE])
    import base64
    sig["signature"] = base64.b64encode(other.sign(members[MANIFEST])).decode()
    swapped = tmp_path / "swapped.zip"
    rewrite(package, swapped, lambda n, b: (json.dumps(sig, sort_keys=True, indent=2) + "\n").encode()
            if n == SIGNATURE else b)
    check = verify_package(swapped)
    assert not check.ok and not check.signature_ok and check.altered == [SIGNATURE]


@pytest.mark.parametrize("target", [*sorted(FILES), PUBLIC_KEY, MANIFEST, SIGNATURE])
def test_missing_member_is_named(package: Path, tmp_path: Path, target: str) -> None:
    bad = tmp_path / "missing.zip"
    rewrite(package, bad, lambda n, b: None if n == target else b)
    check = verify_package(bad)
    assert not check.ok and target in check.missing
    code, out = cli_verify(bad)
    assert code == 1 and f"MISSING: {target}" in out


def test_extra_member_is_named(package: Path, tmp_path: Path) -> None:
    bad = tmp_path / "extra.zip"
    rewrite(package, bad, lambda n, b: b, extra={"notes.txt": b"added later"})
    check = verify_package(bad)
    assert not check.ok and check.unexpected == ["notes.txt"] and not check.altered
    code, out = cli_verify(bad)
    assert code == 1 and "UNEXPECTED: notes.txt" in out


def test_duplicate_member_is_refused(package: Path, tmp_path: Path) -> None:
    bad = tmp_path / "dup.zip"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rewrite(package, bad, lambda n, b: b, extra={"data.csv": b"evil,rows\n"})
    check = verify_package(bad)
    assert not check.ok and "data.csv" in check.unexpected


def test_not_a_zip_and_bad_names(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 this is not a zip")
    check = verify_package(junk)
    assert not check.ok and check.problems == ["not a readable zip archive"]
    code, out = cli_verify(junk)
    assert code == 1 and "not a readable zip" in out
    key = load_or_create_signing_key(tmp_path / "k.pem")
    for name in ["../evil", "/abs", "manifest.json", "a/../b", "", "sp ace"]:
        with pytest.raises(InvalidInput):
            write_package(tmp_path / "x.zip", {name: b"x"}, signing_key=key)
    with pytest.raises(InvalidInput):
        verify_package(junk, public_key_pem="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


def test_zip_metadata_change_is_reported(package: Path, tmp_path: Path) -> None:
    bad = tmp_path / "meta.zip"
    with zipfile.ZipFile(package) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            if info.filename == "data.csv":
                info.date_time = (2024, 5, 1, 12, 0, 0)
            zout.writestr(info, zin.read(info))
    check = verify_package(bad)
    assert not check.ok and not check.altered
    assert any("data.csv" in p and "metadata" in p for p in check.problems)


@pytest.mark.integration
def test_real_command_line_names_the_altered_file(package: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    rewrite(package, bad, flip("data.parquet", 1000))
    exe = Path(sys.executable).with_name("mpi")
    res = subprocess.run([str(exe), "extract", "verify", str(bad)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 1 and "ALTERED: data.parquet" in res.stderr
    res = subprocess.run([str(exe), "extract", "verify", str(package)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0 and "OK" in res.stdout


def test_edited_data_with_a_matching_manifest_is_still_caught(package: Path, tmp_path: Path) -> None:
    """An editor who also fixes the digest in manifest.json cannot re-sign it: manifest.json is named."""
    import hashlib
    new_csv = FILES["data.csv"].replace(b"F", b"M", 1)

    def change(name: str, data: bytes) -> bytes:
        if name == "data.csv":
            return new_csv
        if name == MANIFEST:
            return data.replace(hashlib.sha256(FILES["data.csv"]).hexdigest().encode(),
                                hashlib.sha256(new_csv).hexdigest().encode())
        return data
    bad = tmp_path / "consistent.zip"
    rewrite(package, bad, change)
    check = verify_package(bad)
    assert not check.ok and not check.signature_ok and check.altered == [MANIFEST]
    code, out = cli_verify(bad)
    assert code == 1 and "ALTERED: manifest.json" in out and "BAD SIGNATURE" in out
