"""The ``mpi serve`` command: the only place the CLI touches the web stack.

Owns: starting uvicorn over the FastAPI app with TLS settings (AEAD suites only for TLS 1.2),
the h11 protocol with header size and time limits (api/http.py) and no server banner. It
lives in ``api/`` so that ``mpi`` itself never imports fastapi or uvicorn; ``main`` adds it to
the ``mpi`` command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mpi.cli.common import DataDir
from mpi.cli.common import settings_for as _settings
from mpi.cli.main import app, err, out, print_evaluation
from mpi.cli.main import main as _mpi_main
from mpi.files import private_dir


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8443,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Server certificate "
                                                  "(PEM); default: self-signed in the data dir.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Server private key (PEM).")] = None,
    client_ca: Annotated[Path | None, typer.Option("--client-ca", help="Require client "
                                                   "certificates signed by this CA (mutual TLS).")] = None,
    insecure_http: Annotated[bool, typer.Option("--insecure-http", help="Serve plain HTTP (only "
                                                "behind a TLS-terminating proxy).")] = False,
    header_timeout: Annotated[float, typer.Option("--header-timeout", min=0.1, help="Seconds a "
                                                  "client has to send a request's line and "
                                                  "headers (at most 64 KiB) before the "
                                                  "connection is closed.")] = 10.0,
    data_dir: DataDir = None,
) -> None:
    """Run the HTTPS service (one worker: DuckDB allows one writer process per registry)."""
    import ssl

    import uvicorn

    from api.http import LimitedHttpToolsProtocol
    from api.main import create_app
    from mpi.tls import TLS12_CIPHERS, ensure_self_signed
    settings = _settings(data_dir)
    private_dir(settings.data_dir)
    ssl_kwargs: dict[str, object] = {}
    if insecure_http:
        err.print("[yellow]warning:[/yellow] serving plain HTTP; tokens and API keys cross the "
                  "network unencrypted. Use only behind a TLS-terminating proxy.")
    else:
        if (tls_cert is None) != (tls_key is None):
            raise typer.BadParameter("--tls-cert and --tls-key go together")
        if tls_cert is None or tls_key is None:
            files, created = ensure_self_signed(settings.data_dir / "tls")
            tls_cert, tls_key = files.cert, files.key
            out.print(f"{'generated' if created else 'using'} a self-signed certificate; clients "
                      f"trust it with CA file {files.ca_cert}")
        ssl_kwargs = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key),
                      "ssl_ciphers": TLS12_CIPHERS}
        if client_ca is not None:
            ssl_kwargs.update(ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    application = create_app(settings)
    scheme = "http" if insecure_http else "https"
    out.print(f"mpi serving {scheme}://{host}:{port} (registry {settings.registry_path}); "
              f"OpenAPI docs at {scheme}://{host}:{port}/docs")
    # No access log: request paths can hold person keys and source record ids. httptools with
    # request line + headers capped at 64 KiB and a header time limit on every connection
    # (api/http.py; h11 did the same 15-30% slower); no "server: uvicorn" banner.
    uvicorn.run(application, host=host, port=port, workers=1, log_level="warning",
                access_log=False, server_header=False,
                http=LimitedHttpToolsProtocol.with_timeout(header_timeout),
                timeout_keep_alive=30, **ssl_kwargs)  # type: ignore[arg-type]



@app.command()
def demo(people: Annotated[int, typer.Option(help="Synthetic people.")] = 5000,
         seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
         embedded: Annotated[bool, typer.Option("--embedded", help="Skip HTTPS: ingest the token "
                                                "files straight into the registry.")] = False,
         data_dir: DataDir = None) -> None:
    """The main job: serve over HTTPS, create 3 agencies, tokenize agency-side, submit, link."""
    settings = _settings(data_dir or Path("mpi-demo"))
    if embedded:
        from mpi.demo import run_demo
        run_demo(settings, people=people, seed=seed, say=lambda m: out.print(m),
                 show=print_evaluation)
        return
    from api.demo import run_https_demo
    run_https_demo(settings, people=people, seed=seed, say=lambda m: out.print(m),
                   show=print_evaluation)


def main() -> None:
    """Console entry point for ``mpi`` (all commands, including ``serve``)."""
    _mpi_main()
