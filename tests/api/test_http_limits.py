"""Issue 15 against the real ``mpi serve`` over TLS: oversized and slow request headers are cut
off while the server keeps answering, HSTS and no server banner, and TLS 1.2 offers AEAD
suites only.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import Served, serve, ssl_context

pytestmark = pytest.mark.integration  # a real uvicorn server with TLS

HEADER_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    d = tmp_path_factory.mktemp("limits")
    with serve(d / "data", "--header-timeout", str(HEADER_TIMEOUT)) as s:
        yield s


def _ca(s: Served) -> Path:
    return s.data_dir / "tls" / "ca.pem"


def _tls(s: Served) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    return ssl_context(_ca(s)).wrap_socket(sock, server_hostname="127.0.0.1")


def _read_all(sock: ssl.SSLSocket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError, ssl.SSLError, BrokenPipeError):
        pass
    return b"".join(chunks)


def _healthy(s: Served) -> None:
    with httpx.Client(verify=ssl_context(_ca(s)), timeout=10) as c:
        assert c.get(f"{s.url}/healthz").status_code == 200


def test_200_kib_of_headers_is_refused_and_the_server_keeps_serving(server: Served) -> None:
    with _tls(server) as sock:
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        filler = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(200))
        # closed while we were still sending: also a refusal
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            sock.sendall(head + filler + b"\r\n")
        reply = _read_all(sock)
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert reply == b"" or reply.split(b" ", 2)[1] in (b"400", b"431"), reply[:200]
    _healthy(server)


def test_unfinished_headers_are_cut_off_after_the_header_timeout(server: Served) -> None:
    reply, closed = b"", False
    with _tls(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        sock.settimeout(0.1)
        # a slow client: one header byte every 0.1 s, faster than any idle timeout
        while not closed and time.monotonic() - start < HEADER_TIMEOUT + 8:
            try:
                sock.sendall(b"X")
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except (OSError, ssl.SSLError):
                closed = True
            else:
                reply += data
                closed = not data
        elapsed = time.monotonic() - start
    assert closed
    assert not reply.startswith(b"HTTP/1.1 200")
    assert elapsed < HEADER_TIMEOUT + 6, elapsed
    _healthy(server)


def test_security_headers_and_no_server_banner(server: Served) -> None:
    with httpx.Client(verify=ssl_context(_ca(server)), timeout=10) as c:
        r = c.get(f"{server.url}/healthz")
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        assert "server" not in r.headers
        v1 = c.get(f"{server.url}/v1/agencies", headers={"Authorization": f"Bearer {server.admin_key}"})
        assert v1.status_code == 200 and v1.headers["cache-control"] == "no-store"


def test_tls12_cbc_only_client_fails_the_handshake(server: Served) -> None:
    ctx = ssl_context(_ca(server), max_tls12=True)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA:"
                    "ECDHE-RSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock, \
            pytest.raises((ssl.SSLError, ConnectionResetError)):
        ctx.wrap_socket(sock, server_hostname="127.0.0.1").close()
    ok = ssl_context(_ca(server), max_tls12=True)  # an AEAD suite over TLS 1.2 still works
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock, \
            ok.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        assert "GCM" in tls.cipher()[0] or "CHACHA20" in tls.cipher()[0]
    _healthy(server)


def test_a_malformed_request_gets_problem_json(server: Served) -> None:
    """Protocol-level errors (h11 refuses the request line) are problem+json too, not text."""
    with _tls(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost 127.0.0.1 no colon\r\n\r\n")
        reply = _read_all(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400", reply[:200]
    assert b"content-type: application/problem+json" in head.lower(), head
    assert json.loads(body)["code"] == "bad_request"
    _healthy(server)


def test_large_bodies_on_a_kept_alive_connection_are_not_counted_as_headers(
        server: Served) -> None:
    """Only the request line and headers count towards the 64 KiB limit: several requests
    with 600 KiB bodies on one connection all succeed (the first cut counted body bytes)."""
    with httpx.Client(verify=ssl_context(_ca(server)), timeout=30) as c:
        for _ in range(3):
            r = c.request("GET", f"{server.url}/healthz", content=b"x" * 600_000)
            assert r.status_code == 200, r.text
