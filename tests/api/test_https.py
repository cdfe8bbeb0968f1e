"""The real ``mpi serve`` (uvicorn in a subprocess) over loopback: TLS with trustme
certificates, plain HTTP refused by default, ``--insecure-http`` with its warning, 401 for a
missing or wrong API key, 403 for a wrong role, mutual TLS with ``--client-ca``, and the
default self-signed CA that the server generates in ``<data_dir>/tls`` and prints.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from mpi.agency.client import MpiClient, ServiceError
from tests.support.server import Served, clean_env, mpi_cmd, serve, ssl_context

pytestmark = pytest.mark.integration  # real uvicorn servers with TLS and mTLS


@dataclass
class Pki:
    """trustme CA files: a server CA with a 127.0.0.1/localhost cert, and a client CA."""

    ca: Path
    cert: Path
    key: Path
    client_ca: Path
    client: tuple[Path, Path]          # issued by client_ca
    stranger: tuple[Path, Path]        # a client cert issued by the server CA (not client_ca)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    server_ca.cert_pem.write_to_path(str(d / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    server.private_key_pem.write_to_path(str(d / "server.key"))
    client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))

    def issue(ca: trustme.CA, name: str) -> tuple[Path, Path]:
        c = ca.issue_cert(f"{name}.clients.mpi.test")
        c.cert_chain_pems[0].write_to_path(str(d / f"{name}.pem"))
        c.private_key_pem.write_to_path(str(d / f"{name}.key"))
        return d / f"{name}.pem", d / f"{name}.key"

    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client-ca.pem",
               issue(client_ca, "agency-system"), issue(server_ca, "stranger"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``mpi serve --tls-cert --tls-key`` with the trustme server certificate."""
    d = tmp_path_factory.mktemp("tls")
    with serve(d / "data", "--tls-cert", pki.cert, "--tls-key", pki.key,
               verify=ssl_context(pki.ca)) as s:
        yield s


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """As ``tls_server`` plus ``--client-ca`` (readiness is polled with a valid client cert)."""
    d = tmp_path_factory.mktemp("mtls")
    with serve(d / "data", "--tls-cert", pki.cert, "--tls-key", pki.key, "--client-ca", pki.client_ca,
               verify=ssl_context(pki.ca, client_cert=pki.client)) as s:
        yield s


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"] == f"https://mpi.dev/problems/{code}"
    return body


def raw_http_get(port: int, path: str = "/healthz", timeout: float = 5.0) -> bytes:
    """Send a plain-text HTTP/1.1 request to the port; whatever comes back (b"" if closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


# --- TLS with trustme certificates -------------------------------------------------------------


def test_https_with_the_ca_succeeds_and_fails_verification_without_it(tls_server: Served, pki: Pki) -> None:
    with httpx.Client(verify=ssl_context(pki.ca), timeout=10) as c:
        r = c.get(f"{tls_server.url}/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert r.http_version == "HTTP/1.1"
        assert c.get(f"{tls_server.url}/readyz").json()["status"] == "ready"
    # the system trust store does not know the trustme CA
    with httpx.Client(verify=ssl_context(None), timeout=10) as c, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        c.get(f"{tls_server.url}/healthz")
    # neither does a context that trusts some other CA
    with httpx.Client(verify=ssl_context(pki.client_ca), timeout=10) as c, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        c.get(f"{tls_server.url}/healthz")
    # and the certificate is checked against the host name
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as sock, \
            pytest.raises(ssl.SSLCertVerificationError, match="mismatch|doesn't match"):
        ssl_context(pki.ca).wrap_socket(sock, server_hostname="mpi.example.org")


def test_mpi_client_over_https_with_the_ca_file(tls_server: Served, pki: Pki) -> None:
    with MpiClient(tls_server.url, api_key=tls_server.admin_key, ca_file=pki.ca, max_retries=0) as c:
        assert c.request("GET", "/v1/agencies") == {"agencies": []}


def test_plain_http_to_the_tls_port_is_refused(tls_server: Served) -> None:
    with httpx.Client(timeout=10) as c, pytest.raises(httpx.TransportError):
        c.get(f"http://127.0.0.1:{tls_server.port}/healthz")
    reply = raw_http_get(tls_server.port)
    assert not reply.startswith(b"HTTP/1.1 200") and b'"status":"ok"' not in reply
    # the port still serves HTTPS afterwards
    with httpx.Client(verify=False, timeout=10) as c:
        assert c.get(f"{tls_server.url}/healthz").status_code == 200


def test_missing_or_wrong_api_key_is_401(tls_server: Served, pki: Pki) -> None:
    url = tls_server.url
    with httpx.Client(verify=ssl_context(pki.ca), timeout=10) as c:
        body = assert_problem(c.get(f"{url}/v1/agencies"), 401, "unauthorized")
        assert "traceback" not in str(body).lower()
        r = c.post(f"{url}/v1/records", json={"records": []})
        assert_problem(r, 401, "unauthorized")
        wrong = "mpi_" + "0" * 43
        for headers in ({"Authorization": f"Bearer {wrong}"}, {"X-API-Key": wrong},
                        {"Authorization": f"Bearer {tls_server.admin_key}x"}):
            body = assert_problem(c.get(f"{url}/v1/agencies", headers=headers), 401, "unauthorized")
            assert wrong not in str(body) and tls_server.admin_key not in str(body)
        # the public routes need no key, the admin key works
        assert c.get(f"{url}/v1/schema").status_code == 200
        ok = c.get(f"{url}/v1/agencies", headers={"Authorization": f"Bearer {tls_server.admin_key}"})
        assert ok.status_code == 200


def test_wrong_role_is_403(tls_server: Served, pki: Pki) -> None:
    url = tls_server.url
    admin = {"Authorization": f"Bearer {tls_server.admin_key}"}
    with httpx.Client(verify=ssl_context(pki.ca), timeout=10) as c:
        assert c.post(f"{url}/v1/agencies", json={"agency": "agency_403"}, headers=admin).status_code == 201
        made = c.post(f"{url}/v1/principals", headers=admin,
                      json={"name": "agency 403", "role": "agency", "agency": "agency_403"})
        assert made.status_code == 201, made.text
        agency = {"Authorization": f"Bearer {made.json()['api_key']}"}
        assert_problem(c.get(f"{url}/v1/audit", headers=agency), 403, "forbidden")
        assert_problem(c.post(f"{url}/v1/principals", headers=agency,
                              json={"name": "escalate", "role": "admin"}), 403, "forbidden")
        assert_problem(c.get(f"{url}/v1/audit", headers=admin), 403, "forbidden")
        # the agency key itself is valid: its own routes pass authentication
        r = c.get(f"{url}/v1/records/nope", headers=agency)
        assert_problem(r, 404, "not_found")
        names = [p["name"] for p in c.get(f"{url}/v1/principals", headers=admin).json()["principals"]]
        assert "escalate" not in names


def test_tls_cert_without_key_is_refused(pki: Pki, tmp_path: Path) -> None:
    r = subprocess.run(mpi_cmd("serve", "--data-dir", tmp_path / "data", "--port", "1",
                               "--tls-cert", pki.cert), capture_output=True, text=True, timeout=60,
                       env=clean_env())
    assert r.returncode != 0
    assert "--tls-key" in r.stdout + r.stderr


# --- mutual TLS --------------------------------------------------------------------------------


def test_client_ca_requires_a_client_certificate(mtls_server: Served, pki: Pki) -> None:
    url = f"{mtls_server.url}/healthz"
    # no client certificate: refused (TLS 1.3 reports it on the first read, as a TransportError)
    with httpx.Client(verify=ssl_context(pki.ca), timeout=10) as c, pytest.raises(httpx.TransportError):
        c.get(url)
    # over TLS 1.2 the refusal is the handshake itself
    for cert in (None, pki.stranger):
        ctx = ssl_context(pki.ca, client_cert=cert, max_tls12=True)
        with socket.create_connection(("127.0.0.1", mtls_server.port), timeout=10) as sock, \
                pytest.raises((ssl.SSLError, ConnectionResetError)):
            ctx.wrap_socket(sock, server_hostname="127.0.0.1").close()  # the handshake fails (alert or EOF)
    with socket.create_connection(("127.0.0.1", mtls_server.port), timeout=10) as sock:
        ctx = ssl_context(pki.ca, client_cert=pki.client, max_tls12=True)
        ctx.wrap_socket(sock, server_hostname="127.0.0.1").close()  # and succeeds with a good cert
    # a certificate from another CA than --client-ca is refused too
    with httpx.Client(verify=ssl_context(pki.ca, client_cert=pki.stranger), timeout=10) as c, \
            pytest.raises(httpx.TransportError):
        c.get(url)
    # a client certificate issued by the --client-ca CA is accepted, then the API key is checked
    with httpx.Client(verify=ssl_context(pki.ca, client_cert=pki.client), timeout=10) as c:
        assert c.get(url).status_code == 200
        assert_problem(c.get(f"{mtls_server.url}/v1/agencies"), 401, "unauthorized")
    # the server keeps serving after the refused handshakes
    with httpx.Client(verify=ssl_context(pki.ca, client_cert=pki.client), timeout=10) as c:
        assert c.get(url).status_code == 200


def test_mpi_client_without_client_cert_is_refused_by_mtls(mtls_server: Served, pki: Pki) -> None:
    with MpiClient(mtls_server.url, api_key=mtls_server.admin_key, ca_file=pki.ca,
                   max_retries=0) as mc, pytest.raises(httpx.TransportError):
        mc.request("GET", "/v1/agencies")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mpi_client_with_ca_file_and_client_cert_passes_mtls(mtls_server: Served, pki: Pki) -> None:
    with MpiClient(mtls_server.url, api_key=mtls_server.admin_key, ca_file=pki.ca,
                   client_cert=pki.client, max_retries=0) as mc:
        assert mc.request("GET", "/v1/agencies") == {"agencies": []}


# --- plain HTTP only on request ----------------------------------------------------------------


def test_insecure_http_serves_plain_http_with_a_warning(tmp_path: Path) -> None:
    with serve(tmp_path / "data", insecure=True) as s:
        with httpx.Client(timeout=10) as c:
            assert c.get(f"{s.url}/healthz").status_code == 200
            assert_problem(c.get(f"{s.url}/v1/agencies"), 401, "unauthorized")
            admin = {"Authorization": f"Bearer {s.admin_key}"}
            assert c.get(f"{s.url}/v1/agencies", headers=admin).status_code == 200
        with httpx.Client(verify=False, timeout=10) as c, pytest.raises(httpx.TransportError):
            c.get(f"https://127.0.0.1:{s.port}/healthz")
        assert "warning" in s.stderr().lower()
        text = " ".join((s.stdout() + s.stderr()).split()).lower()
        assert "plain http" in text and "unencrypted" in text
        assert f"http://127.0.0.1:{s.port}" in text
    assert not (tmp_path / "data" / "tls").exists()  # no certificate made for plain HTTP


# --- the default: a self-signed CA in the data directory ---------------------------------------


def test_default_self_signed_ca_is_created_printed_and_trusted(tmp_path: Path, pki: Pki) -> None:
    data = tmp_path / "data"
    with serve(data) as s:
        ca = data / "tls" / "ca.pem"
        assert ca.exists() and (data / "tls" / "server.key").stat().st_mode & 0o777 == 0o600
        assert str(ca) in s.output() and "generated" in s.stdout()
        assert f"https://127.0.0.1:{s.port}" in s.output()
        with httpx.Client(verify=ssl_context(ca), timeout=10) as c:
            assert c.get(f"{s.url}/healthz").status_code == 200
        with MpiClient(s.url, api_key=s.admin_key, ca_file=ca, max_retries=0) as mc:
            assert mc.request("GET", "/v1/agencies") == {"agencies": []}
            with pytest.raises(ServiceError) as exc:
                mc.request("GET", "/v1/audit")
            assert exc.value.status == 403
        for other in (None, pki.ca):
            with httpx.Client(verify=ssl_context(other), timeout=10) as c, \
                    pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                c.get(f"{s.url}/healthz")
        with httpx.Client(timeout=10) as c, pytest.raises(httpx.TransportError):
            c.get(f"http://127.0.0.1:{s.port}/healthz")
        assert (data / "admin.key").stat().st_mode & 0o777 == 0o600


def test_printed_ca_path_survives_a_non_terminal_stdout(tmp_path: Path) -> None:
    data = tmp_path / ("long-data-directory-" * 5) / "data"
    with serve(data) as s:
        ca = data / "tls" / "ca.pem"
        assert str(ca) in s.output()  # present once whitespace is removed...
        assert any(str(ca) in line for line in s.stdout().splitlines())  # ...but not on one line
