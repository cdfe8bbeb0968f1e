"""What DuckDB database encryption would cost the registry: enrol N records with and without.

Checks first whether the installed DuckDB writes an encrypted database offline (without
downloading the httpfs extension, which brings OpenSSL). DuckDB 2.0.1 does not: its built-in
mbedtls module is read-only for encryption, and writing needs either httpfs or
``SET force_mbedtls_unsafe = 'true'``, which DuckDB itself labels "NOT securely encrypted".
With ``--unsafe`` the script measures that built-in path anyway, as the order of magnitude of
the AES-GCM cost only; it is not a configuration mpi offers.

How: the real ``Registry`` enrols the same tokenized synthetic records in batches of
``--batch`` (the bulk path) into a fresh data directory, once on a plain registry file and once
on the same file ATTACHed with an ``ENCRYPTION_KEY`` (the script wraps ``duckdb.connect`` so the
store and each of its cursors use the attached, encrypted database). Runs alternate; the
median of ``--repeat`` runs is reported (wall and process CPU time, the latter less
disturbed by other load on a shared machine), with whether a known attribute value can be found in
the file's bytes after the registry closes.

Usage: python scripts/bench_encryption.py [--records 20000] [--batch 1000] [--repeat 3] [--unsafe]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpi.config import Settings  # noqa: E402
from mpi.identity.pipeline import demo_secret, tokenize_rows  # noqa: E402
from mpi.identity.registry import Registry  # noqa: E402
from mpi.synth import generate  # noqa: E402

_CONNECT = duckdb.connect  # the real one (the runs below swap duckdb.connect)
KEY = "bench-only-0123456789abcdef0123456789abcdef"
MARKER = "ZZMARKERPROGRAM"


def offline_support() -> str:
    """How the installed DuckDB answers an encrypted write without httpfs."""
    with tempfile.TemporaryDirectory() as d:
        con = duckdb.connect()
        try:
            con.execute(f"ATTACH '{Path(d) / 'probe.db'}' AS probe (ENCRYPTION_KEY '{KEY}')")
            con.execute("CREATE TABLE probe.t AS SELECT 1 AS i")
            return "writes encrypted databases offline"
        except duckdb.Error as exc:
            return f"refused: {exc}"
        finally:
            con.close()


class _Encrypted:
    """A connection to an in-memory catalog with the registry ATTACHed encrypted and in use;
    every cursor is switched to it as well."""

    def __init__(self, path: str, *, config: dict[str, Any] | None = None) -> None:
        self._con = _CONNECT(config=config or {})
        self._con.execute("SET force_mbedtls_unsafe = 'true'")
        self._con.execute(f"ATTACH '{path}' AS reg (ENCRYPTION_KEY '{KEY}')")
        self._con.execute("USE reg")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the encrypted database."""
        cur = self._con.cursor()
        cur.execute("USE reg")
        return cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _records(n: int) -> list[dict[str, Any]]:
    rows, _truth = generate(people=int(n / 1.6) + 50, agencies=1, seed=11)
    plain = next(iter(rows.values()))
    tokens, _rejected = tokenize_rows(plain, secret=demo_secret(1), attributes=["program"])
    out = [dict(r, source_record_id=f"r{i}") for i, r in enumerate(tokens[:n])]
    out[0]["attributes"] = {"program": MARKER}
    return out


def _run(records: list[dict[str, Any]], *, encrypted: bool, batch: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mpi-enc-"))
    if encrypted:  # mpi/store/db.py calls duckdb.connect: it gets the encrypted database
        setattr(duckdb, "connect", _Encrypted)  # noqa: B010
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        reg = Registry(Settings(data_dir=work / "data"))
        for i in range(0, len(records), batch):
            res = reg.enrol_records("bench", list(enumerate(records[i:i + batch], start=1)))
            assert not res.problems
        reg.close()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        setattr(duckdb, "connect", _CONNECT)  # noqa: B010
    path = work / "data" / "mpi.duckdb"
    found = MARKER.encode() in path.read_bytes()
    size = path.stat().st_size
    shutil.rmtree(work)
    return {"seconds": seconds, "cpu": cpu, "marker_in_file": found, "bytes": size}


def main() -> None:
    """Run the comparison and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--unsafe", action="store_true",
                    help="measure DuckDB's built-in (mbedtls, 'not securely encrypted') path")
    args = ap.parse_args()
    out: dict[str, Any] = {"duckdb": duckdb.__version__, "offline": offline_support()}
    if args.unsafe:
        records = _records(args.records)
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "encrypted": []}
        for _ in range(args.repeat):
            for kind in ("plain", "encrypted"):
                runs[kind].append(_run(records, encrypted=kind == "encrypted", batch=args.batch))
        for kind, rs in runs.items():
            out[kind] = {"median_s": round(statistics.median(r["seconds"] for r in rs), 2),
                         "runs_s": [round(r["seconds"], 2) for r in rs],
                         "median_cpu_s": round(statistics.median(r["cpu"] for r in rs), 2),
                         "records_per_s": round(args.records / statistics.median(
                             r["seconds"] for r in rs)),
                         "marker_in_file": rs[0]["marker_in_file"], "bytes": rs[0]["bytes"]}
        out["overhead"] = round(out["encrypted"]["median_s"] / out["plain"]["median_s"] - 1, 3)
        out["cpu_overhead"] = round(
            out["encrypted"]["median_cpu_s"] / out["plain"]["median_cpu_s"] - 1, 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
