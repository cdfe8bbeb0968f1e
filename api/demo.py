"""``mpi demo``: the whole journey over HTTPS on a fresh embedded registry.

Owns: starting the real service (uvicorn, TLS with a generated CA) in this process, creating
three agencies and their API keys through the admin API, tokenizing synthetic records
agency-side, submitting them over HTTPS with ``mpi.agency.client``, and printing linkage quality.
Must not: take a shortcut the real path does not take (records only arrive over HTTPS).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from api.main import create_app
from mpi.agency.client import MpiClient, read_api_key
from mpi.agency.tokenizer import tokenize_file
from mpi.config import Settings
from mpi.demo import link_and_evaluate
from mpi.identity.registry import Registry
from mpi.secretfile import read_secret, write_secret
from mpi.steward.evaluation import Evaluation, evaluate, read_truth
from mpi.synth import synthesize
from mpi.tls import ensure_self_signed


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """uvicorn serving the app over TLS in a thread of this process."""

    def __init__(self, settings: Settings, *, port: int, cert: Path, key: Path) -> None:
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="warning",
                                access_log=False,
                                workers=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def run_https_demo(settings: Settings, *, people: int, seed: int, say: Callable[[str], None],
                   show: Callable[[Evaluation], None]) -> Evaluation:
    """Serve, create agencies, tokenize agency-side, submit over HTTPS, link and evaluate."""
    root = settings.data_dir
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    tls, _ = ensure_self_signed(root / "tls")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    agency_dir = root / "agencies"
    with BackgroundServer(settings, port=port, cert=tls.cert, key=tls.key):
        say(f"1. mpi serving {url} over HTTPS (CA file {tls.ca_cert}); "
            f"first admin key in {root / 'admin.key'}")
        synth = synthesize(people=people, agencies=3, seed=seed, out_dir=agency_dir)
        secret_path = agency_dir / "linkage.secret"
        write_secret(secret_path)
        secret = read_secret(secret_path)
        predicted: dict[tuple[str, str], str] = {}
        admin = MpiClient(url, api_key=read_api_key(root / "admin.key"), ca_file=tls.ca_cert)
        with admin:
            for f in synth.files:
                agency = f.stem
                admin.request("POST", "/v1/agencies", json={"agency": agency})
                made = admin.request("POST", "/v1/principals", json={
                    "name": f"{agency} system", "role": "agency", "agency": agency})
                key_file = agency_dir / f"{agency}.key"
                key_file.write_text(made["api_key"] + "\n")
                key_file.chmod(0o600)
                tokens = agency_dir / f"{agency}.tokens.jsonl"
                summary = tokenize_file(f, secret=secret, out=tokens,
                                        attributes=["race_ethnicity", "birth_year", "program"])
                say(f"2. {agency}: created with its own API key; tokenized {summary.written} "
                    f"records agency-side ({summary.rejected} rejected, see "
                    f"{summary.rejects.name if summary.rejects else '-'})")
                with MpiClient(url, api_key=read_api_key(key_file), ca_file=tls.ca_cert) as c:
                    sent = c.submit_file(tokens, batch_size=1000, on_results=_collect(
                        predicted, agency))
                say(f"3. {agency}: submitted {sent.records} records over HTTPS in "
                    f"{sent.batches} batches: " + ", ".join(
                        f"{k} {v}" for k, v in sorted(sent.outcomes.items())))
            truth = read_truth(synth.truth)
            say("4. online linkage quality (keys returned by POST /v1/records):")
            show(evaluate(truth, predicted))
    reg = Registry(settings)
    try:
        ev = link_and_evaluate(reg, truth, step=5, say=say, show=show)
    finally:
        reg.close()
    say(f"next: `mpi serve --data-dir {root}` then open https://127.0.0.1:8443/docs (trust "
        f"{tls.ca_cert}); `mpi keys export --out keys.csv --data-dir {root}`; agency keys are in "
        f"{agency_dir}; steward tools: `mpi review list --data-dir {root}`, "
        f"`mpi model train --data-dir {root}`, `mpi report linkage-quality --by race_ethnicity "
        f"--data-dir {root}`")
    return ev


def _collect(into: dict[tuple[str, str], str], agency: str
             ) -> Callable[[list[dict[str, Any]]], None]:
    def on_results(results: list[dict[str, Any]]) -> None:
        for r in results:
            into[(agency, r["source_record_id"])] = r["person_key"]
    return on_results
