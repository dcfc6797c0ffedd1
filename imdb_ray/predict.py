"""Scoring with a trained model: rows in, the same rows out, in the same order.

Input is a text file (one text per line, split on "\\n" only: U+0085, U+2028 and a lone "\\r" are
characters of a review, not line breaks; "\\r\\n" endings are tolerated), a table (CSV / TSV / JSONL /
Parquet, optionally .gz, with --text-column and optional --id-column / --label-column), or stdin.
Everything streams in chunks, so memory follows the batch, not the file. Empty texts are rows too:
they are scored (as a text with no words), never dropped, so row N out is always row N in.
"""
from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from imdb_ray.bundle import LABELS, Predictor
from imdb_ray.data import check_fields, parse_error, parse_label
from imdb_ray.errors import UserError

CHUNK_ROWS = 1024  # rows read, scored and written at a time
TABLES = ("csv", "tsv", "jsonl", "json", "parquet")


@dataclass
class Chunk:
    ids: list[str]
    texts: list[str]
    labels: list[int] | None = None


@dataclass
class Scored:
    rows: int = 0
    labels: list[int] = field(default_factory=list)  # given labels, in row order (when the input has them)
    probs: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Accuracy, macro-F1 and accuracy's 95% bootstrap interval, as `report` computes them."""
        from imdb_ray.compare import bootstrap_ci
        from imdb_ray.train import macro_f1

        y, p = np.asarray(self.labels), np.asarray(self.probs)
        pred = (p >= 0.5).astype(np.int64)  # the rule train's evaluation uses: the same number, exactly
        _, low, high = bootstrap_ci(y, p)
        return {"accuracy": float((pred == y).mean()), "f1": macro_f1(y, pred),
                "ci_low": low, "ci_high": high}


def kind_of(path: Path) -> str:
    return path.name.removesuffix(".gz").rsplit(".", 1)[-1].lower() if "." in path.name else "txt"


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def text_lines(stream: IO[bytes], source: str) -> Iterator[str]:
    """Lines split on b"\\n" only (a binary file's own iteration), one trailing "\\r" removed."""
    for number, raw in enumerate(stream, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{source}: line {number} is not valid UTF-8 (byte {e.start}); re-save the file as UTF-8") from None
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield line


def read_chunks(source: str | None, *, text_column: str = "text", id_column: str | None = None,
                label_column: str | None = None, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
    """The input as chunks of (ids, texts, labels): a path, or None or '-' for stdin (text lines). The file,
    its type and the first chunk's columns are checked now, before any model is loaded."""
    if source == "-" and (label_column or id_column):
        raise UserError("--file -: stdin is read as text lines, which have no columns; --label-column/--id-column need "
                        "a .csv, .tsv, .jsonl or .parquet file (or give labels with --labels FILE)")
    if source in (None, "-"):  # bytes, so that only "\n" splits (a replaced sys.stdin may have no buffer)
        stream = getattr(sys.stdin, "buffer", None) or io.BytesIO(sys.stdin.read().encode("utf-8"))
        return _line_chunks(text_lines(stream, "stdin"), chunk_rows)
    path = readable_path(source, "--file")
    kind = kind_of(path)
    if kind not in TABLES:
        if label_column or id_column:
            raise UserError(f"--file {source}: a plain text file has no columns; --label-column/--id-column need "
                            "a .csv, .tsv, .jsonl or .parquet file (or give labels with --labels FILE)")
        return _line_chunks(_file_lines(path), chunk_rows)
    chunks = _table_chunks(path, kind, chunk_rows, text_column, id_column, label_column)
    first = next(chunks, None)
    return itertools.chain([first] if first else [], chunks)


def _file_lines(path: Path) -> Iterator[str]:
    with _open_binary(path) as stream:
        yield from text_lines(stream, str(path))


def _table_chunks(path: Path, kind: str, chunk_rows: int, text_column: str, id_column: str | None,
                  label_column: str | None) -> Iterator[Chunk]:
    start = 0
    for frame in _table_frames(path, kind, chunk_rows):
        yield _frame_chunk(frame, str(path), start, text_column, id_column, label_column)
        start += len(frame)


def _line_chunks(lines: Iterator[str], chunk_rows: int) -> Iterator[Chunk]:
    ids, texts, row = [], [], 0
    for row, line in enumerate(lines, 1):
        ids.append(str(row))
        texts.append(line)
        if len(texts) == chunk_rows:
            yield Chunk(ids, texts)
            ids, texts = [], []
    if texts:
        yield Chunk(ids, texts)


def _table_frames(path: Path, kind: str, chunk_rows: int):
    import pandas as pd

    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
            return
        if kind in ("csv", "tsv"):
            reader = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False,
                                 chunksize=chunk_rows, encoding="utf-8")
        else:
            reader = pd.read_json(path, lines=True, dtype=False, chunksize=chunk_rows, encoding="utf-8")
        with reader:
            for frame in reader:
                yield check_fields(frame, path, kind)
    except UserError:
        raise
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 (byte {e.start}); re-save the file as UTF-8") from None
    except Exception as e:  # pandas/pyarrow parser errors carry the line number in their message
        raise UserError(f"{path}: cannot parse as {kind}: {parse_error(e, kind)}") from None


def _frame_chunk(frame, source: str, start: int, text_column: str, id_column: str | None,
                 label_column: str | None) -> Chunk:
    for flag, column in (("--text-column", text_column), ("--id-column", id_column), ("--label-column", label_column)):
        if column is not None and column not in frame.columns:
            raise UserError(f"{source}: {flag} '{column}' is not a column (columns: {', '.join(map(str, frame.columns))})")
    texts = []
    for i, text in enumerate(frame[text_column].tolist()):
        if text is None or (isinstance(text, float) and np.isnan(text)):
            text = ""
        if not isinstance(text, str):
            raise UserError(f"{source}: row {start + i + 1}: column '{text_column}' holds {type(text).__name__}, not text")
        texts.append(text)
    ids = [str(v) for v in frame[id_column].tolist()] if id_column else [str(start + i + 1) for i in range(len(frame))]
    labels = None
    if label_column:
        labels = [parse_label(v, f"{source}: row {start + i + 1}") for i, v in enumerate(frame[label_column].tolist())]
    return Chunk(ids, texts, labels)


class Writer:
    """Scored rows to CSV or JSONL (by --out's extension), or today's tab-separated lines to stdout. A file is
    written beside --out and put in its place by close(keep=True): a refused input, Ctrl-C or a crash leaves
    whatever --out held before, never a half-written file that looks complete."""

    def __init__(self, out: str | None, with_text: bool):
        self.with_text, self.kind, self.out = with_text, None, out
        self.stream: IO[str] = sys.stdout
        if out:
            kind = kind_of(Path(out))
            if kind not in ("csv", "jsonl"):
                raise UserError(f"--out {out}: write .csv or .jsonl")
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            self.kind, self.part = kind, Path(out).with_name(f".{Path(out).name}.{os.getpid()}.part")
            self.stream = open(self.part, "w", encoding="utf-8", newline="")  # the umask's permissions, as --out's own
            if kind == "csv":
                self.csv = csv.writer(self.stream)
                self.csv.writerow(["id", "label", *(f"prob_{name}" for name in LABELS)] + (["text"] if with_text else []))

    def write(self, chunk: Chunk, probs: np.ndarray) -> None:
        for row_id, text, p in zip(chunk.ids, chunk.texts, probs):
            label, p = LABELS[int(p >= 0.5)], float(p)
            if self.kind == "csv":
                self.csv.writerow([row_id, label, f"{1 - p:.6f}", f"{p:.6f}"] + ([text] if self.with_text else []))
            elif self.kind == "jsonl":
                record = {"id": row_id, "label": label, **{f"prob_{n}": round(v, 6) for n, v in zip(LABELS, (1 - p, p))}}
                self.stream.write(json.dumps({**record, **({"text": text} if self.with_text else {})}, ensure_ascii=False) + "\n")
            else:  # one line per row on stdout; the text shown on one line, whatever it holds
                shown = " ".join(text.split())[:80]
                self.stream.write(f"{label}\t{max(p, 1 - p):.4f}\t{shown}\n")

    def close(self, keep: bool) -> None:
        """The file into --out's place (keep) or removed: all rows or none."""
        if self.stream is not sys.stdout:
            self.stream.close()
            if keep:
                os.replace(self.part, self.out)
            else:
                self.part.unlink()


def score(predictor: Predictor, chunks: Iterator[Chunk], writer: Writer, *, labels: Iterator[int] | None = None,
          progress: bool = True, batch_size: int = 64) -> Scored:
    """Score every chunk in order and write it before reading the next."""
    from tqdm import tqdm

    scored = Scored()
    bar = tqdm(unit=" rows", disable=not progress, file=sys.stderr, desc="predict")
    for chunk in chunks:
        probs = predictor.predict_proba(chunk.texts, batch_size=batch_size)
        writer.write(chunk, probs)
        given = chunk.labels
        if given is None and labels is not None:
            given = list(itertools.islice(labels, len(chunk.texts)))
            if len(given) < len(chunk.texts):
                raise UserError(f"the input has more rows than --labels has lines ({scored.rows + len(given)})")
        if given is not None:
            scored.labels += given
            scored.probs += probs.tolist()
        scored.rows += len(chunk.texts)
        bar.update(len(chunk.texts))
    bar.close()
    return scored


def readable_path(source: str, flag: str) -> Path:
    """`source` as a path to read, or a one-line error. Not only regular files: a pipe (`--file <(zcat x.gz)`)
    reads as text lines."""
    path = Path(source)
    if not path.exists() or path.is_dir():
        raise UserError(f"{flag} {source}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
    return path


def label_lines(source: str) -> Iterator[int]:
    """--labels FILE: one label per line (0/1, pos/neg, positive/negative), aligned with the input rows. The
    file is checked now, before any model is loaded or row printed; its lines are read as the rows are."""
    path = readable_path(source, "--labels")

    def labels() -> Iterator[int]:
        with _open_binary(path) as stream:
            for number, line in enumerate(text_lines(stream, source), 1):
                yield parse_label(line, f"{source}: line {number}")

    return labels()
