"""The prediction table: one row per photo (:func:`prediction_row`, in :func:`columns` order) and its writers, CSV,
JSONL or Parquet, chosen by the file's extension. ``parkclf predict`` appends a batch at a time and resumes from the
rows already there; the app's "Many photos" tab writes the same rows to its CSV download, so both tables read the
same.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from pathlib import Path

from .classifier import Prediction
from .errors import UsageError

logger = logging.getLogger(__name__)


def columns(labels: list[str]) -> list[str]:
    return ["path", "label", *(f"confidence_{n}" for n in labels), "abstained", "error"]


def prediction_row(path: str, pred: Prediction | None, error: str | None, labels: list[str]) -> dict:
    """One row of the table, in :func:`columns` order; ``pred`` is None for an unreadable photo, ``error`` says why.
    The app's CSV download is built from it too, so both tables read the same."""
    return {"path": path, "label": pred.label if pred else "",
            **{f"confidence_{n}": pred.confidences[n] if pred else None for n in labels},
            "abstained": bool(pred and pred.abstained), "error": error or ""}


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())  # on disk before the next batch starts: a crash loses at most the batch in flight


def _truncate(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        logger.warning("%s: dropping an incomplete last row (a run was killed while writing it)", path)
        with open(path, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())


def _check_columns(path: Path, found: list[str], expected: list[str]) -> None:
    if found != expected:
        raise UsageError(f"{path} has the columns {', '.join(found)}, not this model's ({', '.join(expected)}): it "
                         "holds another model's predictions. Give a new --output, or delete it to start over.")


def _typed(record: list[str], cols: list[str]) -> dict:
    """A CSV record read back with the types the other formats keep."""
    row = dict(zip(cols, record, strict=True))
    for c in cols:
        if c.startswith("confidence_"):
            row[c] = float(row[c]) if row[c] else None
    row["abstained"] = row["abstained"] == "True"
    return row


class JsonlTable:
    """One JSON object a line. Also the shards of the processes and the journal behind a Parquet output."""

    def __init__(self, path: Path, cols: list[str]):
        self.path, self.columns = path, cols

    def repair(self) -> None:
        if self.path.exists():  # JSON escapes newlines, so anything after the last one is a torn row
            _truncate(self.path, self.path.read_bytes().rfind(b"\n") + 1)

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for n, line in enumerate(self.path.read_text("utf-8", "surrogateescape").split("\n"), 1):
            try:
                rows += [json.loads(line)] if line else []
            except ValueError:
                raise UsageError(f"{self.path} line {n} is not a JSON row; fix or delete the file.") from None
        for row in rows[:1]:
            _check_columns(self.path, list(row), self.columns)
        return rows

    def append(self, rows: list[dict]) -> None:
        _append(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def finish(self) -> None:
        pass


class CsvTable(JsonlTable):
    def _text(self) -> str:
        return self.path.read_text("utf-8", "surrogateescape") if self.path.exists() else ""

    def repair(self) -> None:
        text, consumed, whole = self._text(), 0, 0

        def lines():  # csv.reader pulls a line at a time: count what each record used (a path may hold a newline)
            nonlocal consumed
            for line in io.StringIO(text, newline=""):
                consumed += len(line)
                yield line

        with contextlib.suppress(csv.Error):
            for n, record in enumerate(csv.reader(lines())):
                if n == 0 and text[consumed - 1] == "\n":
                    _check_columns(self.path, record, self.columns)
                if len(record) != len(self.columns) or text[consumed - 1] != "\n":
                    break
                whole = consumed
        if len(list(csv.reader(io.StringIO(text[whole:], newline="")))) > 1:  # more than one torn row: not a kill
            raise UsageError(f"{self.path} has a row that is not one of this table's; fix or delete the file.")
        _truncate(self.path, len(text[:whole].encode("utf-8", "surrogateescape")))

    def rows(self) -> list[dict]:
        records = list(csv.reader(io.StringIO(self._text(), newline="")))
        for header in records[:1]:
            _check_columns(self.path, header, self.columns)
        return [_typed(r, self.columns) for r in records[1:]]

    def append(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, lineterminator="\n")
        if not self.path.exists() or self.path.stat().st_size == 0:
            writer.writeheader()
        writer.writerows(rows)
        _append(self.path, buf.getvalue())


class ParquetTable:
    """A Parquet file cannot be appended to: rows go to a JSONL journal beside it, and :meth:`finish` writes the
    Parquet (then deletes the journal). Its rows are the Parquet's plus the journal's."""

    def __init__(self, path: Path, cols: list[str]):
        self.path, self.columns = path, cols
        self.journal = JsonlTable(path.with_name(path.name + ".journal.jsonl"), cols)
        self.pa, self.pq = _pyarrow()

    def repair(self) -> None:
        self.journal.repair()

    def rows(self) -> list[dict]:
        done = self.pq.read_table(self.path).to_pylist() if self.path.exists() else []
        for row in done[:1]:
            _check_columns(self.path, list(row), self.columns)
        seen = {r["path"] for r in done}  # a kill between writing the Parquet and deleting the journal
        return done + [r for r in self.journal.rows() if r["path"] not in seen]

    def append(self, rows: list[dict]) -> None:
        self.journal.append(rows)

    def finish(self) -> None:
        if not self.journal.path.exists():
            return
        pa = self.pa
        types = {"path": pa.string(), "label": pa.string(), "abstained": pa.bool_(), "error": pa.string()}
        schema = pa.schema([(c, types.get(c, pa.float64())) for c in self.columns])
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.pq.write_table(pa.Table.from_pylist(self.rows(), schema=schema), tmp)
        os.replace(tmp, self.path)  # atomic: a kill leaves the old Parquet or the new one, never half of one
        self.journal.path.unlink()


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("A .parquet output needs pyarrow: pip install pyarrow (or write .csv or .jsonl).") from None
    return pa, pq


TABLES = {".csv": CsvTable, ".jsonl": JsonlTable, ".parquet": ParquetTable}


def table_class(path: Path):
    if path.suffix.lower() not in TABLES:
        raise UsageError(f"--output {path}: the extension picks the format; end it in .csv, .jsonl or .parquet.")
    return TABLES[path.suffix.lower()]


def open_table(path: Path, labels: list[str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    return table_class(path)(path, columns(labels))
