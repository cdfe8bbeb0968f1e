"""Shared helpers for the scripts/bench_*.py benchmarks (not part of the mpi package).

Machine details, timing statistics, synthetic data -> token files, and working copies of a
prebuilt registry directory (so benchmarks that write to it never change the original).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def cpu_calibration() -> dict[str, float]:
    """How fast this VM's core is right now, to compare runs across machines: a 10M-step Python
    loop and a bare DuckDB one-row INSERT + COMMIT in a scratch file (medians of 3 and 200)."""
    import duckdb
    loops = []
    for _ in range(3):
        t = time.perf_counter()
        s = 0
        for i in range(10_000_000):
            s += i
        loops.append(time.perf_counter() - t)
    commits = []
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        con = duckdb.connect(f"{d}/c.duckdb")
        con.execute("CREATE TABLE t (a BIGINT PRIMARY KEY, b VARCHAR)")
        for i in range(200):
            t = time.perf_counter()
            con.execute("INSERT INTO t VALUES (?, ?)", [i, "x"])
            commits.append(time.perf_counter() - t)
        con.close()
    return {"python_loop_10m_s": round(statistics.median(loops), 3),
            "duckdb_insert_commit_ms": round(statistics.median(commits) * 1000, 3)}


def machine_info() -> dict[str, Any]:
    """Platform, CPU model, cores, memory, Python and library versions."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(), "cpu_model": cpu, "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        # 1/5/15-minute load when the summary is written: > cores means other work was
        # running on the (shared) machine during the benchmark
        "loadavg_at_report": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import psutil
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    info["mpi_source"] = source_state()
    info["cpu_calibration"] = cpu_calibration()
    for mod in ("duckdb", "splink", "pyarrow", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - report what is importable
            info[mod] = None
    return info


def source_state() -> dict[str, Any]:
    """Commit of the mpi checkout and which mpi/ files differ from it (read-only git calls)."""
    import subprocess
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never write the index
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, env=env, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "mpi"],
                               capture_output=True, text=True, env=env,
                               timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}
    return {"commit": head, "dirty_mpi_files": [d[3:] for d in dirty]}


def rss_mb() -> float:
    """Resident set size of this process in MiB."""
    import psutil
    return float(psutil.Process().memory_info().rss) / 2**20


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def summary(values: Sequence[float]) -> dict[str, float]:
    """median / min / max / n of a list of timings."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds."""
    import numpy as np
    a = np.asarray(seconds) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "mean": float(a.mean()),
            "n": int(len(a))}


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print the JSON summary (and save it if asked)."""
    text = json.dumps(result, indent=2, default=str)
    print(text, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def emit_after_run(result: dict[str, Any], out: Path | None) -> None:
    """``emit`` with ``result["machine"]``'s load average taken now, after the run."""
    result["machine"]["loadavg_at_report"] = [round(x, 2) for x in os.getloadavg()]
    emit(result, out)


def log(msg: str) -> None:
    """Progress to stderr (stdout carries the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def blank_columns(path: Path, fields: Sequence[str]) -> None:
    """Empty ``fields`` in every row of a CSV (an agency that does not collect them)."""
    import csv
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        names, rows = list(reader.fieldnames or []), list(reader)
    for row in rows:
        for f in fields:
            if f in row:
                row[f] = ""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def synth_and_tokenize(*, people: int, agencies: int, seed: int, out_dir: Path,
                       secret_seed: int = 1, blank: Sequence[str] = ()
                       ) -> tuple[dict[str, Path], Path, dict[str, float]]:
    """Synthesize agency CSVs + truth.csv (``blank`` fields emptied), tokenize each to JSONL;
    return files, truth, times."""
    from mpi.agency.tokenizer import tokenize_file
    from mpi.identity.pipeline import demo_secret
    from mpi.synth import synthesize
    times: dict[str, float] = {}
    t = time.perf_counter()
    s = synthesize(people=people, agencies=agencies, seed=seed, out_dir=out_dir)
    times["synthesize_s"] = time.perf_counter() - t
    secret = demo_secret(secret_seed)
    files: dict[str, Path] = {}
    t = time.perf_counter()
    for f in s.files:
        if blank:
            blank_columns(f, blank)
        out = out_dir / f"{f.stem}.tokens.jsonl"
        tokenize_file(f, secret=secret, out=out)
        files[f.stem] = out
    times["tokenize_s"] = time.perf_counter() - t
    times["records"] = s.records
    return files, s.truth, times


def read_token_records(path: Path) -> list[tuple[int, Any]]:
    """All (row, record) pairs of a JSONL tokens file, as `mpi ingest` reads them."""
    from mpi.agency.tokenfile import iter_chunks
    out: list[tuple[int, Any]] = []
    for rows, _problems in iter_chunks(path, chunk=100_000):
        out.extend(rows)
    return out


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for i in range(0, len(items), size):
        yield items[i: i + size]


def working_copy(data_dir: Path, *, parent: Path | None = None) -> Path:
    """Copy a registry directory's DuckDB file(s) and server secret to a fresh temp dir."""
    dst = Path(tempfile.mkdtemp(prefix="mpi-bench-work-", dir=parent or data_dir.parent))
    journal = [p.name for p in data_dir.glob("mpi.duckdb.journal.*")]  # Decision 48
    for name in ("mpi.duckdb", "mpi.duckdb.wal", "server.secret", *journal):
        src = data_dir / name
        if src.exists():
            shutil.copy2(src, dst / name)
            _flush(dst / name)
    os.chmod(dst / "server.secret", 0o600)
    _flush(dst)
    return dst


def _flush(path: Path) -> None:
    """fsync a copied file (or directory) so the kernel does not write it back later, mid-run.

    Without it a 435 MB registry copy sits dirty in the page cache and the kernel writes it
    back 30 s later (vm.dirty_expire_centisecs), in the middle of a timed run: every fdatasync
    of the server's journal then waits 100-300 ms behind it (measured, BENCHMARKS.md)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_registry(data_dir: Path) -> Any:
    """A Registry over ``data_dir`` with default settings."""
    from mpi.config import Settings
    from mpi.identity.registry import Registry
    return Registry(Settings(data_dir=data_dir))


def export_mapping(reg: Any) -> dict[tuple[str, str], str]:
    """(agency, source_record_id) -> person_key for every active record."""
    keys = reg.export_keys()
    return dict(zip(zip(keys.column("agency").to_pylist(),
                        keys.column("source_record_id").to_pylist(), strict=True),
                    keys.column("person_key").to_pylist(), strict=True))


def eval_dict(ev: Any) -> dict[str, Any]:
    """An Evaluation as plain JSON."""
    return {"records": ev.records, "true_clusters": ev.true_clusters,
            "predicted_clusters": ev.predicted_clusters,
            "cluster": {"precision": ev.cluster.precision, "recall": ev.cluster.recall,
                        "f1": ev.cluster.f1},
            "pairwise": {"precision": ev.pairwise.precision, "recall": ev.pairwise.recall,
                         "f1": ev.pairwise.f1}}


def met(value: float, target: float, *, higher_is_better: bool) -> bool:
    """Whether a figure meets its target."""
    return value >= target if higher_is_better else value <= target
