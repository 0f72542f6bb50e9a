"""Documents from files: plain text, JSONL (.gz), CSV/TSV and parquet, one document per text file, JSON line or
table row, turned into text by a template. `slm data prepare` and `slm tokenizer train` read their inputs here.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import string
import sys
from pathlib import Path
from typing import Iterator

from slmkit.errors import SlmError

SUFFIXES = (".txt", ".md", ".text", ".jsonl", ".json", ".jsonl.gz", ".json.gz", ".txt.gz", ".csv", ".tsv",
            ".parquet")
# JSON records without a --template: the first of these field sets a record has, joined as shown
AUTO_TEMPLATES = (
    ("text",), ("content",), ("prompt", "completion"), ("question", "answer"), ("instruction", "output"),
    ("chosen",),
)
PIECE_CHARS = 1 << 16  # a text file is tokenized in pieces of about this many characters


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), path.suffix.lower())


def input_files(paths: list[str]) -> list[Path]:
    """The readable files under the given files and folders, in a stable order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _suffix(f) in SUFFIXES
                           and not f.name.startswith("."))
            if not found:
                raise SlmError(f"{p}: no input files in this folder (looked for {', '.join(SUFFIXES)})")
            out += found
        elif p.is_file():
            if _suffix(p) not in SUFFIXES:
                raise SlmError(f"{p}: unsupported file type; use one of {', '.join(SUFFIXES)}")
            out.append(p)
        else:
            raise SlmError(f"{p}: no such file or folder")
    return out


# --- reading documents ---------------------------------------------------------------------------------------


class Template:
    """Turns one record (a JSON object, or a table row) into a document's text."""

    def __init__(self, template: str | None):
        # a shell passes "\n" as two characters: turn the usual escapes into the characters (non-ASCII text stays)
        self.template = _unescape(template) if template else None
        self.fields = [f for _, f, _, _ in string.Formatter().parse(self.template or "") if f is not None]

    def json(self, record: object, where: str) -> str:
        if not isinstance(record, dict):
            raise SlmError(f"{where}: expected a JSON object per line")
        if self.template:
            try:
                return self.template.format(**record)
            except KeyError as e:
                raise SlmError(f"{where}: the record has no field {e} that --template names; it has "
                               f"{', '.join(record)}") from None
        for fields in AUTO_TEMPLATES:
            if all(isinstance(record.get(f), str) for f in fields):
                return "".join(record[f] if i == 0 else _joiner(record[fields[i - 1]], record[f]) + record[f]
                               for i, f in enumerate(fields))
        raise SlmError(f"{where}: no text field found (fields: {', '.join(record)}); name them with --template, "
                       f"e.g. --template '{{{next(iter(record), 'text')}}}'")

    def row(self, row: list[str], where: str) -> str:
        if self.template:
            try:
                return self.template.format(*row)
            except IndexError:
                raise SlmError(f"{where}: --template names column {max(self.fields)} but the row has "
                               f"{len(row)} columns (use {{0}}, {{1}}, ... for table files)") from None
            except KeyError as e:
                raise SlmError(f"{where}: table rows have numbered columns, not {e}; use {{0}}, {{1}}, ...") from None
        return "\n".join(row)


def _joiner(previous: str, following: str) -> str:
    """Nothing where the fields already meet at whitespace (a completion starting with a space), else a newline."""
    return "" if previous[-1:].isspace() or following[:1].isspace() else "\n"


def _open_text(path: Path):
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def read_documents(path: Path, template: Template) -> Iterator[str]:
    """The documents in one file: a text file is one document (yielded in pieces that end at a line break
    followed by a non-space, which is a pre-tokenizer boundary, so the pieces tokenize as the whole would);
    each JSONL line, table row or parquet row is one document."""
    kind = _suffix(path)
    try:
        if kind == ".parquet":
            yield from _parquet_documents(path, template)
            return
        with _open_text(path) as fh:
            if kind in (".jsonl", ".json", ".jsonl.gz", ".json.gz"):
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise SlmError(f"{path}:{n}: not valid JSON ({e.msg}); expected one JSON object "
                                           f"per line") from None
                        yield template.json(record, f"{path}:{n}")
            elif kind in (".csv", ".tsv"):
                csv.field_size_limit(sys.maxsize)
                reader = (csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE) if kind == ".tsv"
                          else csv.reader(fh))
                for n, row in enumerate(reader, 1):
                    if row:
                        if kind == ".tsv":  # TSV fields cannot hold tabs or newlines: they come escaped
                            row = [_unescape(f) for f in row]
                        yield template.row(row, f"{path}:{n}")
            else:
                yield from _text_pieces(fh)
    except UnicodeDecodeError as e:
        raise SlmError(f"{path}: not UTF-8 text (byte {e.start} of a read block: {e.reason}); convert it first, "
                       f"e.g. iconv -f latin1 -t utf-8") from None
    except (OSError, EOFError) as e:
        raise SlmError(f"{path}: cannot read ({e})") from None


def read_records(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, record) for each record of a JSONL(.gz) file, or each row of a CSV/TSV file with a header row: the
    labelled examples a classifier trains on."""
    kind = _suffix(path)
    if kind not in (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".csv", ".tsv"):
        raise SlmError(f"{path}: labelled examples come as JSONL, or CSV/TSV with a header row")
    try:
        with _open_text(path) as fh:
            if kind in (".csv", ".tsv"):
                csv.field_size_limit(sys.maxsize)
                reader = csv.DictReader(fh, delimiter="\t" if kind == ".tsv" else ",",
                                        quoting=csv.QUOTE_NONE if kind == ".tsv" else csv.QUOTE_MINIMAL)
                for n, row in enumerate(reader, 2):
                    yield f"{path}:{n}", ({k: _unescape(v or "") for k, v in row.items()} if kind == ".tsv" else row)
                return
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise SlmError(f"{path}:{n}: not valid JSON ({e.msg}); expected one JSON object per line") from None
                    if not isinstance(record, dict):
                        raise SlmError(f"{path}:{n}: expected a JSON object per line")
                    yield f"{path}:{n}", record
    except UnicodeDecodeError as e:
        raise SlmError(f"{path}: not UTF-8 text ({e.reason}); convert it first") from None
    except OSError as e:
        raise SlmError(f"{path}: cannot read ({e})") from None


_TSV_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _unescape(field: str) -> str:
    """Undo the escapes \\n, \\t, \\r and \\\\ (FLAN's TSVs write line breaks this way)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 1 < len(field) and field[i + 1] in _TSV_ESCAPES:
            out.append(_TSV_ESCAPES[field[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Piece(str):
    """A piece of a longer document; the document goes on in the next piece (no separator in between)."""


def _text_pieces(fh) -> Iterator[str]:
    buf: list[str] = []
    size = 0
    for line in fh:
        if size >= PIECE_CHARS and line[:1] not in ("", " ", "\t", "\n", "\r"):
            yield Piece("".join(buf))
            buf, size = [], 0
        buf.append(line)
        size += len(line)
    yield "".join(buf)


def _parquet_documents(path: Path, template: Template) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SlmError("reading parquet needs pyarrow: pip install pyarrow") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for damaged files
        raise SlmError(f"{path}: not a readable parquet file ({e})") from None
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            n += 1
            yield template.json(record, f"{path}: row {n}")
