"""The files of a research extract: data as Parquet and CSV, the data dictionary, JSON reports.

Owns: the fixed Parquet writer options, the CSV and JSON writers, the total row order and the
data dictionary's text. Pure: tables and specs in, bytes out. Must not: read the registry or
write a file to disk (the workflow zips and signs the bytes).

Same input, same bytes: rows sort by every column from ``person_id`` on, Parquet is written with
the options below, CSV by Arrow's writer and JSON with sorted keys.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from mpi.extract.build import AttributeSpec, ExtractSpec

PERSON_ID = "person_id"
AGENCY = "agency"
LINK_PROBABILITY = "link_match_probability"
PARQUET_OPTIONS: Mapping[str, Any] = {
    "compression": "zstd", "compression_level": 9, "use_dictionary": True,
    "write_statistics": False, "version": "2.6", "data_page_version": "1.0",
    "row_group_size": 1 << 20, "store_schema": False,
}


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as Parquet with fixed writer options (same table, same bytes)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, **PARQUET_OPTIONS)
    return buf.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    """The table as CSV (header, quoted strings, Arrow's number and date formatting)."""
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, write_options=pacsv.WriteOptions(
        include_header=True, batch_size=65536, delimiter=",", quoting_style="needed"))
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    """Indented JSON with sorted keys and a final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str)
            + "\n").encode()


def sort_rows(table: pa.Table) -> pa.Table:
    """Rows by pseudonym, then every other column (nulls last): a total, stable order."""
    return table.sort_by([(c, "ascending") for c in table.column_names])


def data_dictionary(table: pa.Table, attributes: Mapping[str, AttributeSpec],
                    further: Mapping[str, str], *, shifted: Sequence[str] = ()
                    ) -> list[dict[str, Any]]:
    """The data dictionary of the released columns."""
    fixed = {
        PERSON_ID: "Project pseudonym of the person: a keyed hash of the person key under this "
                   "project's secret. The same person has the same id in every rebuild of this "
                   "project and in no other project.",
        AGENCY: "Agency holding the record.",
        LINK_PROBABILITY: "Match probability of this record's link to its person (highest match "
                          "probability to another record of the same person), rounded to 3 "
                          "decimals; empty when the person has no other record. See "
                          "linkage_quality.json.",
        "count": "Number of persons in the cell (a person with several values of a dimension "
                 "counts once in each, so margins.json sums person-cells); empty when suppressed.",
        "suppressed": "True when the cell's count is withheld (primary: 1 to threshold-1; "
                      "complementary: so that no withheld cell can be recovered).",
    }
    out: list[dict[str, Any]] = []
    for name in table.column_names:
        entry: dict[str, Any] = {"column": name, "arrow_type": str(table.schema.field(name).type)}
        if name in attributes:
            a = attributes[name]
            entry.update(agency=a.agency, dataset=a.dataset, attribute=a.name, type=a.type,
                         **{"class": a.klass}, description=a.description,
                         generalization=a.generalization, date_shifted=name in shifted,
                         generalized_further=further.get(name))
        else:
            entry["description"] = fixed.get(name, "")
        out.append(entry)
    return out


def dictionary_markdown(spec: ExtractSpec, entries: Sequence[Mapping[str, Any]]) -> str:
    """The data dictionary as a Markdown table."""
    lines = [f"# Data dictionary: {spec.title}", "", f"Extract `{spec.extract_id}` ({spec.kind}).",
             "", "| column | type | class | generalization | description |",
             "| --- | --- | --- | --- | --- |"]
    for e in entries:
        gen = e.get("generalization") or ""
        if e.get("date_shifted") and gen != "date_shift":
            gen = f"date_shift, {gen}"
        if e.get("generalized_further"):
            gen += f" → {e['generalized_further']}"
        desc = str(e.get("description", "")).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{e['column']}` | {e.get('type', e['arrow_type'])} | "
                     f"{e.get('class', '')} | {gen} | {desc} |")
    return "\n".join(lines) + "\n"
