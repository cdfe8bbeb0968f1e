"""The ``mpi`` command line through typer's CliRunner, on real files in tmp_path.

Owns: schema, secret new, synth -> tokenize -> ingest -> link -> keys export -> evaluate end to
end (~500 people), the no-plaintext promise of tokenize, ingest rejects, and demo.
"""

from __future__ import annotations

import csv
import json
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from api.cli import app
from mpi.agency.schema import FIELD_NAMES, SCHEMA_VERSION, TOKEN_NAMES
from mpi.config import Settings
from mpi.errors import ConfigurationError
from mpi.identity.registry import Registry
from mpi.steward.evaluation import evaluate, read_keys, read_truth

runner = CliRunner()
TOKEN_RE = re.compile(r"^[0-9a-f]{8}:[A-Za-z0-9_-]{43}$")


def invoke(*args: str | Path) -> Result:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"mpi {' '.join(map(str, args))}:\n{result.output}\n{result.exception!r}"
    return result


@dataclass(frozen=True)
class Run:
    root: Path
    synth: Path
    data: Path
    secret: Path
    agencies: list[str]
    tokens: dict[str, Path]
    keys: Path
    outputs: dict[str, Result]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("cli")
    synth, data, secret = root / "synth", root / "data", root / "linkage.secret"
    outputs = {"synth": invoke("synth", "--people", "500", "--agencies", "3", "--seed", "3",
                               "--out", synth)}
    outputs["secret"] = invoke("secret", "new", "--out", secret)
    agencies = sorted(p.stem for p in synth.glob("agency_*.csv"))
    assert len(agencies) == 3
    tokens = {}
    for agency in agencies:
        tokens[agency] = root / f"{agency}.tokens.jsonl"
        outputs[f"tokenize {agency}"] = invoke(
            "tokenize", synth / f"{agency}.csv", "--secret-file", secret, "--out", tokens[agency],
            "--attribute", "race_ethnicity")
        outputs[f"ingest {agency}"] = invoke("ingest", tokens[agency], "--agency", agency,
                                             "--data-dir", data)
    outputs["link"] = invoke("link", "--data-dir", data)
    keys = root / "keys.csv"
    outputs["keys export"] = invoke("keys", "export", "--out", keys, "--data-dir", data)
    outputs["evaluate"] = invoke("evaluate", "--truth", synth / "truth.csv", "--keys", keys)
    return Run(root, synth, data, secret, agencies, tokens, keys, outputs)


def test_schema_prints_the_contract_as_json() -> None:
    doc = json.loads(invoke("schema").stdout)
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    tokens = [t for f in doc["fields"] for t in f["tokens"]]
    assert tuple(t["name"] for t in sorted(tokens, key=lambda t: t["since_revision"])) == TOKEN_NAMES


@pytest.mark.integration
def test_secret_new_creates_a_private_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "s.secret"
    result = invoke("secret", "new", "--out", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    body = path.read_text()
    data = json.loads(body)
    assert data["kind"] == "mpi-linkage-secret" and data["key_id"] in result.stdout
    assert data["secret"] not in result.output
    again = runner.invoke(app, ["secret", "new", "--out", str(path)])
    assert again.exit_code != 0
    assert isinstance(again.exception, ConfigurationError)
    assert path.read_text() == body
    # Through the real entry point the refusal is one clean line and exit code 2.
    proc = subprocess.run([sys.executable, "-c", "from mpi.cli.main import main; main()", "secret", "new",
                           "--out", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "refusing to overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert path.read_text() == body


def test_end_to_end_pipeline(run: Run) -> None:
    with run.keys.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["agency", "source_record_id", "person_key"]
    assert len(rows) > 900
    assert {r[0] for r in rows[1:]} == set(run.agencies)
    assert all(r[2].startswith("pk_") for r in rows[1:])
    ev = evaluate(read_truth(run.synth / "truth.csv"), read_keys(run.keys))
    assert ev.pairwise.f1 > 0.9 and ev.cluster.f1 > 0.9
    text = run.outputs["evaluate"].stdout
    assert "pairwise" in text and "cluster" in text
    assert f"{ev.pairwise.f1:.4f}" in text
    assert "records" in run.outputs["link"].stdout
    # the shipped model never saw this registry: mpi link says how to calibrate it
    assert "never trained on this registry" in run.outputs["link"].stdout
    assert "mpi model train" in run.outputs["link"].stdout

    for agency in run.agencies:
        assert "rejected" not in run.outputs[f"ingest {agency}"].stderr
    # The keys CLI export is the registry's export.
    reg = Registry(Settings(data_dir=run.data))
    try:
        stored = {(r["agency"], r["source_record_id"]): r["person_key"]
                  for r in reg.export_keys().to_pylist()}
        assert stored == {(a, s): k for a, s, k in rows[1:]}
        assert reg.stats()["persons"]["active"] == len({r[2] for r in rows[1:]})
    finally:
        reg.close()
    # Keys show for one key.
    shown = json.loads(invoke("keys", "show", rows[1][2], "--data-dir", run.data).stdout)
    assert shown["status"] == "active" and [rows[1][0], rows[1][1]] in shown["records"]


def test_ingest_is_safe_to_rerun(run: Run, tmp_path: Path) -> None:
    agency = run.agencies[0]
    before = run.keys.read_text()
    result = invoke("ingest", run.tokens[agency], "--agency", agency, "--data-dir", run.data,
                    "--rejects", tmp_path / "rej.csv")
    assert "unchanged" in result.stdout
    assert "new" not in result.stdout and "updated" not in result.stdout
    again = tmp_path / "keys.csv"
    invoke("keys", "export", "--out", again, "--data-dir", run.data)
    assert again.read_text() == before


def test_tokenize_output_holds_no_plaintext(run: Run) -> None:
    agency = run.agencies[0]
    with (run.synth / f"{agency}.csv").open(newline="", encoding="utf-8") as fh:
        plain = list(csv.DictReader(fh))
    text = run.tokens[agency].read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) >= 0.95 * len(plain)
    by_sid = {r["source_record_id"]: r for r in plain}
    allowed_keys = {"source_record_id", "schema_version", "tokens", "attributes", "research_consent"}
    for rec in records:
        assert set(rec) <= allowed_keys
        assert rec["schema_version"] == SCHEMA_VERSION
        assert set(rec["tokens"]) <= set(TOKEN_NAMES)
        assert all(TOKEN_RE.match(t) for t in rec["tokens"].values())
        src = by_sid[rec["source_record_id"]]
        # Only the requested attribute passes through, with its own value.
        assert set(rec.get("attributes", {})) <= {"race_ethnicity"}
        if src["race_ethnicity"]:
            assert rec["attributes"]["race_ethnicity"] == src["race_ethnicity"]
    # No identifier value (raw or upper-cased) appears anywhere in the output; long enough
    # values only, so that a random base64 substring cannot collide by chance.
    values = {v.strip() for r in plain for f in FIELD_NAMES if (v := r.get(f)) and len(v.strip()) >= 8}
    values |= {v.upper() for v in values}
    values |= {r[c] for r in plain for c in ("program", "enrolled_on") if len(r[c]) >= 8}
    assert len(values) > 500
    leaked = [v for v in values if v in text]
    assert leaked == []
    # Nor as a whole JSON string value (short values too, e.g. ZIP or a first name).
    strings = {t for rec in records for t in rec["tokens"].values()}
    short = {v.strip() for r in plain for f in FIELD_NAMES if (v := r.get(f)) and v.strip()}
    assert not strings & (short | {v.upper() for v in short})
    # The console output of tokenize names counts and files, not values.
    out = run.outputs[f"tokenize {agency}"].output
    assert not [v for v in values if v in out]


def test_ingest_reports_a_malformed_line_and_stores_the_rest(run: Run, tmp_path: Path) -> None:
    agency = run.agencies[1]
    lines = run.tokens[agency].read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]           # line 3: truncated JSON
    bad = json.loads(lines[4])
    bad["schema_version"] = 99                          # line 5: valid JSON, bad record
    lines[4] = json.dumps(bad)
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rejects = tmp_path / "rejects.csv"
    data = tmp_path / "data"
    result = runner.invoke(app, ["ingest", str(path), "--agency", agency, "--data-dir", str(data),
                                 "--rejects", str(rejects)])
    assert result.exit_code == 0, result.output
    with rejects.open(newline="") as fh:
        rej = list(csv.DictReader(fh))
    assert [(r["row"], r["field"]) for r in rej] == [("3", ""), ("5", "schema_version")]
    assert "not valid JSON" in rej[0]["reason"]
    assert rej[1]["source_record_id"] == bad["source_record_id"]
    assert "rejected 2" in result.stdout
    reg = Registry(Settings(data_dir=data))
    try:
        assert reg.stats()["records"] == {"active": len(lines) - 2}
    finally:
        reg.close()


def test_tokenize_rejects_a_row_and_names_it(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("source_record_id,given_name,family_name,date_of_birth,phone\n"
                   "r1,Johnathan,Smithers,1971-04-09,617-555-0142\n"
                   "r2,Onlyaname,,,\n"
                   "r1,Johnathan,Smithers,1971-04-09,617-555-0142\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    rejects = tmp_path / "rej.csv"
    invoke("tokenize", src, "--secret-file", run.secret, "--out", out, "--rejects", rejects)
    assert len(out.read_text().splitlines()) == 1
    with rejects.open(newline="") as fh:
        rej = list(csv.DictReader(fh))
    assert [(r["row"], r["outcome"]) for r in rej] == [("2", "refused"), ("3", "refused")]
    assert "Onlyaname" not in rejects.read_text() and "Smithers" not in rejects.read_text()


def test_tokenize_keeps_rows_with_dropped_fields_and_says_so(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("source_record_id,given_name,family_name,date_of_birth,postal_code,email\n"
                   "r1,Johnathan,Smithers,1971-04-09,2139,\n"
                   "r2,Ursula,Vandersloot,1962-07-15,02139,ursula@@example\n"
                   "r3,Onlyaname,,1990-02-30,,\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = invoke("tokenize", src, "--secret-file", run.secret, "--out", out)
    assert len(out.read_text().splitlines()) == 2
    assert (f"3 rows: 2 tokenized (1 with dropped fields, 1 fields repaired) -> {out}, "
            f"1 refused -> {out}.rejects.csv") in " ".join(result.stdout.split())
    with (tmp_path / "out.jsonl.rejects.csv").open(newline="") as fh:
        rej = list(csv.DictReader(fh))
    assert [(r["row"], r["field"], r["outcome"]) for r in rej] == [
        ("1", "postal_code", "repaired"), ("2", "email", "dropped"),
        ("3", "date_of_birth", "refused"), ("3", "", "refused")]
    result = invoke("tokenize", src, "--secret-file", run.secret, "--out", out, "--no-zero-pad")
    assert "2 tokenized (2 with dropped fields) ->" in " ".join(result.stdout.split())
    text = (tmp_path / "out.jsonl.rejects.csv").read_text()
    assert "2139" not in text and "ursula" not in text and "1990-02-30" not in text


@pytest.mark.parametrize("mode", [pytest.param([], id="https", marks=pytest.mark.integration),  # real server
                                  pytest.param(["--embedded"], id="embedded")])
def test_demo_runs_and_prints_f1(tmp_path: Path, mode: list[str]) -> None:
    result = invoke("demo", "--people", "300", *mode, "--data-dir", tmp_path / "demo")
    assert "F1" in result.stdout
    m = re.search(r"pairwise\D+([01]\.\d{4})\D+([01]\.\d{4})\D+([01]\.\d{4})", result.stdout)
    assert m is not None, result.stdout
    assert float(m.group(3)) > 0.8
    assert (tmp_path / "demo" / "mpi.duckdb").exists()


def test_evaluate_counts_records_without_a_key(run: Run, tmp_path: Path) -> None:
    """A truth record whose key is missing (refused, never enrolled) is a missed link, and
    the output says how many there were."""
    lines = run.keys.read_text().splitlines()
    short = tmp_path / "keys.csv"
    short.write_text("\n".join(lines[:-50]) + "\n")
    out = invoke("evaluate", "--truth", run.synth / "truth.csv", "--keys", short).stdout
    full = evaluate(read_truth(run.synth / "truth.csv"), read_keys(run.keys))
    part = evaluate(read_truth(run.synth / "truth.csv"), read_keys(short))
    assert part.missing == 50 and part.records == full.records
    assert part.pairwise.recall <= full.pairwise.recall
    assert "50 records of the truth have no key" in " ".join(out.split())
