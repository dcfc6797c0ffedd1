"""Load labelled text, validate it row by row, clean it, and split it (seeded, stratified).

Sources: the bundled IMDB copy (default), any CSV / TSV / JSONL / Parquet file or train/test pair,
or a Hugging Face `datasets` id (needs network). The official test split is only ever used for the
final evaluation of a finished model; validation is carved out of train.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import html
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imdb_ray.errors import UserError

BUNDLED_IMDB = Path(os.environ.get("IMDB_RAY_DATA", Path(__file__).resolve().parent.parent / "data" / "imdb"))

DEFAULT_GROUP_COLUMN = "movie_id"  # TrialConfig's default: used where the data has it, else the split is random
# A split by group gives whole groups: its validation share may miss val_fraction by this much (relative) at most.
GROUP_FRACTION_TOLERANCE = 0.5
# Strings that unambiguously name a sentiment label.
LABEL_NAMES = {"0": 0, "1": 1, "neg": 0, "pos": 1, "negative": 0, "positive": 1, "false": 0, "true": 1}


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # int64, values in {0, 1}
    rows: np.ndarray | None = None  # each text's row in its source file: predictions join on it across seeds
    groups: np.ndarray | None = None  # each text's group (IMDB: its movie), for a validation split by group
    columns: tuple[str, ...] = ()  # the source's columns (its meta file's too), for errors that name them

    def take(self, idx: np.ndarray) -> "Split":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Split([self.texts[i] for i in idx], self.labels[idx], pick(self.rows), pick(self.groups))

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split

    def fingerprint(self) -> str:
        """Content hash of all three splits: the cache key of everything derived from them."""
        h = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            h.update(str(len(split)).encode())
            for text in split.texts:
                h.update(text.encode("utf-8"))
                h.update(b"\0")
            h.update(split.labels.astype(np.int64).tobytes())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------- reading
def _decode(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line} is not valid UTF-8 (byte {e.start}); re-save the file as UTF-8") from None


def _bad_json_line(text: str) -> str | None:
    """The first line of a JSON-lines text that is no JSON object, as "line N ..."; None if each one is."""
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            return f"line {number} is not valid JSON ({e.msg}, column {e.colno})"
        if not isinstance(row, dict):
            return f"line {number} is not a JSON object ({{\"text\": ..., \"label\": ...}})"
    return None


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV / TSV / JSONL / Parquet file (optionally .gz) into a DataFrame of strings."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: data file not found")
    kind = path.name.removesuffix(".gz").rsplit(".", 1)[-1].lower()
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        text = _decode(path)
        if kind in ("csv", "tsv"):
            sep = "\t" if kind == "tsv" else ","
            _check_header(path, text, sep)
            return check_fields(pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False), path, kind)
        if kind in ("jsonl", "json"):
            return pd.read_json(io.StringIO(text), lines=True, dtype=False)
    except UserError:
        raise
    except Exception as e:  # pandas' CSV errors carry the line number in their message; its JSON ones a byte position
        where = _bad_json_line(text) if kind in ("jsonl", "json") else None
        raise UserError(f"{path}: {where}; fix that line" if where else
                        f"{path}: cannot parse as {kind}: {parse_error(e, kind)}") from None
    raise UserError(f"{path}: unknown file type '.{kind}'; use .csv, .tsv, .jsonl or .parquet (optionally .gz)")


def check_fields(frame: pd.DataFrame, path: str | Path, kind: str) -> pd.DataFrame:
    """A CSV/TSV frame whose first row has one field more than the header is refused: pandas would silently take
    that first field of every row as an index (a review "Great film, loved it" unquoted would read as "loved it")."""
    if kind in ("csv", "tsv") and not isinstance(frame.index, pd.RangeIndex):
        raise UserError(f"{path}: line 2 has one field more than the header ({', '.join(map(str, frame.columns))}); "
                        f"{_quote_advice(kind)}, as CSV writers do")
    return frame


def _quote_advice(kind: str) -> str:
    return f"put each text that holds {'a tab' if kind == 'tsv' else repr(',')} in double quotes"


def parse_error(error: Exception, kind: str) -> str:
    """pandas' parser error, first line, with what to do about a row of too many fields."""
    message = str(error).strip().splitlines()[0]
    if kind in ("csv", "tsv") and "Expected" in message and "fields" in message:
        message += f"; {_quote_advice(kind)}"
    elif kind in ("csv", "tsv") and "EOF inside string" in message:
        message += "; a text there opens a double quote that nothing closes (write a quote inside a quoted text as \"\")"
    return message


def _check_header(path: Path, text: str, sep: str) -> None:
    """A column named twice is refused (pandas would rename the second to `text.1` and read the first)."""
    import csv

    header = next(csv.reader(io.StringIO(text.partition("\n")[0]), delimiter=sep), [])
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise UserError(f"{path}: column {', '.join(map(repr, twice))} appears more than once in the header; rename one")


def parse_label(value: object, where: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        if int(value) in (0, 1):
            return int(value)
    key = str(value).strip().lower()
    if key in LABEL_NAMES:
        return LABEL_NAMES[key]
    if key in ("", "nan", "none"):  # a missing field reads as empty (CSV) or NaN/None (JSON, Parquet)
        raise UserError(f"{where}: no label (empty, null, or a row with fewer fields than the header)")
    raise UserError(f"{where}: label {value!r} is not 0/1 or one of {sorted(set(LABEL_NAMES))}")


def to_split(frame: pd.DataFrame, source: str, text_column: str = "text", label_column: str = "label",
             group_column: str | None = None) -> Split:
    """Validate a frame row by row; every error names the source and the data row (1-based)."""
    for column in (text_column, label_column):
        if column not in frame.columns:
            raise UserError(f"{source}: missing column '{column}' (columns: {', '.join(map(str, frame.columns))})")
    texts: list[str] = []
    labels = np.empty(len(frame), dtype=np.int64)
    for i, (text, label) in enumerate(zip(frame[text_column].tolist(), frame[label_column].tolist())):
        where = f"{source}: row {i + 1}"
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{where}: empty text in column '{text_column}'")
        texts.append(text)
        labels[i] = parse_label(label, where)
    if len(texts) == 0:
        raise UserError(f"{source}: no rows")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise UserError(f"{source}: every row has label {classes[0]}; a split needs both classes")
    groups = None
    if group_column is not None and group_column in frame.columns:
        groups = frame[group_column].astype(str).to_numpy()
    return Split(texts, labels, np.arange(len(texts)), groups, tuple(map(str, frame.columns)))


def _meta_groups(split: Split, table: Path, group_column: str) -> Split:
    """Groups from a row-aligned `<split>_meta.csv(.gz)` beside the table (the bundled IMDB's movie_id)."""
    if split.groups is not None:
        return split
    for meta in (table.with_name(table.name.split(".")[0] + "_meta.csv.gz"), table.with_name(table.name.split(".")[0] + "_meta.csv")):
        if meta.is_file():
            frame = pd.read_csv(meta, usecols=lambda c: c == group_column)
            if group_column in frame.columns and len(frame) == len(split):
                split.groups = frame[group_column].astype(str).to_numpy()
                split.columns += (group_column,)
            break
    return split


def _load_raw(source: str | None, text_column: str, label_column: str,
              group_column: str | None = None) -> tuple[Split, Split]:
    """(train, test) from the bundled data, a file pair/dir, or a `datasets` id."""
    pair = _local_pair(source)
    if pair is None:
        train, test = _load_hub(source, text_column, label_column, group_column)
    else:
        train, test = (_read_split(p, _identity(p), text_column, label_column, group_column) for p in pair)
    where = source or "the bundled IMDB data"
    data_columns = lambda s: set(s.columns) - {group_column}  # noqa: E731  (groups may live in a meta file)
    if data_columns(train) != data_columns(test):
        raise UserError(f"{where}: the train and test files have different columns ({', '.join(train.columns)} vs "
                        f"{', '.join(test.columns)}); give both the same columns")
    if group_column and group_column != DEFAULT_GROUP_COLUMN and train.groups is None:  # a typo would fall back silently
        raise UserError(f"group_column={group_column!r} names no column of {where}; its columns: {', '.join(train.columns)}")
    return train, test


def _local_pair(source: str | None) -> tuple[Path, Path] | None:
    """The (train, test) files `source` names: the bundled data, "train_file,test_file" or a folder with
    train.* and test.*; None for a `datasets` id."""
    if source is None or source == "imdb":
        source = str(BUNDLED_IMDB)
    path = Path(source)
    if "," in source:  # "train.csv,test.csv"
        train_path, test_path = (Path(p.strip()) for p in source.split(",", 1))
        return train_path, test_path
    if path.is_dir():
        found = {}
        for split in ("train", "test"):
            matches = sorted(p for p in path.iterdir() if p.name.split(".")[0] == split and not p.name.endswith(".md"))
            if not matches:
                raise UserError(f"{path}: no {split}.csv/.tsv/.jsonl/.parquet file in this folder")
            found[split] = matches[0]
        return found["train"], found["test"]
    if path.suffix or path.exists():  # one file, or a path that reads as one: not a `datasets` id
        what = "one file" if path.exists() else "no such file or folder"
        raise UserError(f"{source}: {what}; give a folder with train.* and test.* files, or 'train_file,test_file'")
    return None


def source_identity(source: str | None) -> list | None:
    """What `source`'s local files are now (paths, sizes, mtimes, with their meta files): a cache key for
    anything read from them; None for a `datasets` id (the `datasets` library caches those itself)."""
    pair = _local_pair(source)
    return None if pair is None else [(str(p.resolve()), _identity(p)) for p in pair]


def _identity(path: Path) -> tuple[tuple[int, int], ...]:
    """(size, mtime) of a table and of the meta files _meta_groups may read beside it."""
    stem = path.name.split(".")[0]
    files = (path, path.with_name(stem + "_meta.csv.gz"), path.with_name(stem + "_meta.csv"))
    return tuple((st.st_size, st.st_mtime_ns) if (st := f.stat() if f.exists() else None) else (-1, -1) for f in files)


@functools.lru_cache(maxsize=4)  # two train/test pairs: a reused trial process (or a test session) reads a file once
def _read_split(path: Path, identity: tuple, text_column: str, label_column: str, group_column: str | None) -> Split:
    """A data file as a validated Split, kept while it and its meta files are unchanged (`identity`, part
    of the cache key). Callers only `take` rows from it, never change it in place."""
    if group_column:
        return _meta_groups(to_split(read_table(path), str(path), text_column, label_column, group_column), path, group_column)
    return to_split(read_table(path), str(path), text_column, label_column)


def _load_hub(name: str, text_column: str, label_column: str, group_column: str | None = None) -> tuple[Split, Split]:
    import datasets

    try:
        ds = datasets.load_dataset(name)
    except Exception as e:
        raise UserError(f"{name}: not a local path, and `datasets` could not load it ({type(e).__name__}); "
                        "check the name or go online") from None
    if "train" not in ds or "test" not in ds:
        raise UserError(f"{name}: the dataset needs 'train' and 'test' splits, it has {list(ds)}")
    return tuple(to_split(ds[s].to_pandas(), f"{name}[{s}]", text_column, label_column, group_column) for s in ("train", "test"))


# ----------------------------------------------------------------------------------- cleaning
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Remove HTML tags (IMDB's `<br />`) and entities, collapse whitespace."""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()


# ----------------------------------------------------------------------------------- splitting
def stratified_subset(split: Split, n: int | None, seed: int) -> Split:
    """A seeded, class-balanced subset of n rows (all rows, shuffled, when n is None or too big)."""
    # scikit-learn is imported where a split is built: a trial process reads its splits from the cache and
    # would otherwise pay 1.5 s of import for nothing
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(split))
    if n is not None and n < len(split):
        idx, _ = train_test_split(idx, train_size=n, stratify=split.labels, random_state=seed)
    else:
        idx = np.random.default_rng(seed).permutation(idx)
    return split.take(idx)


VAL_SPLITS = ("auto", "random", "group")


def validation_indices(split: Split, n_val: int, how: str, seed: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions. "random": stratified by label. "group": whole groups go to validation (about
    n_val rows), so no group (IMDB: movie) is on both sides, as in the official train/test split."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    if how == "random":
        return train_test_split(np.arange(len(split)), test_size=n_val, stratify=split.labels, random_state=seed)
    if split.groups is None:
        raise UserError(f"val_split='group' needs a group column: {source} has none under that name "
                        "(set group_column to a column of the train file, or use val_split='random')")
    groups = np.unique(split.groups)
    if len(groups) < 2:
        raise UserError(f"val_split='group': {source} has {len(groups)} group; a split by group needs at least 2")
    splitter = GroupShuffleSplit(n_splits=1, test_size=max(1, round(len(groups) * n_val / len(split))), random_state=seed)
    return next(splitter.split(np.zeros(len(split)), split.labels, split.groups))


def load_dataset(
    source: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    val_fraction: float = 0.1,
    n_train: int | None = None,
    n_test: int | None = None,
    clean: bool = True,
    seed: int = 0,
    val_split: str = "auto",
    group_column: str | None = "movie_id",
) -> Dataset:
    """Official train/test, with a seeded validation split carved from train (by group where the data has
    groups, else stratified at random; `val_split` forces either).

    n_train counts train+val rows (val is val_fraction of it); n_test subsets the test split.
    """
    # groups are read unless the split is random (the meta file costs a read)
    train, test = _load_raw(source, text_column, label_column, None if val_split == "random" else group_column)
    train = stratified_subset(train, n_train, seed)
    test = stratified_subset(test, n_test, seed)
    if clean:  # after subsetting: a quick run cleans only the rows it uses
        for s in (train, test):
            s.texts = [clean_text(t) for t in s.texts]
    n_val = max(2, round(len(train) * val_fraction))
    if len(train) - n_val < 2:
        raise UserError(f"n_train={len(train)} is too small to carve a validation split of {val_fraction:.0%}")
    # "auto": by group where the data has groups, else random (results/validation_gap.md says why)
    how = val_split if val_split != "auto" else ("random" if train.groups is None else "group")
    tr_idx, val_idx = validation_indices(train, n_val, how, seed, source or "the bundled IMDB data")
    got = len(val_idx) / len(train)
    if how == "group" and abs(got - val_fraction) > GROUP_FRACTION_TOLERANCE * val_fraction:
        raise UserError(f"val_fraction={val_fraction:g}: the groups of '{group_column}' ({len(np.unique(train.groups))} of them) "
                        f"give a validation share of {got:.3f} (more than {GROUP_FRACTION_TOLERANCE:.0%} off); use fewer, "
                        "larger or more groups, another val_fraction, or val_split='random'")
    if len(np.unique(train.labels[val_idx])) < 2 or len(np.unique(train.labels[tr_idx])) < 2:
        raise UserError(f"the {how} validation split left one class on a side; raise n_train or val_fraction, "
                        "or set val_split='random'")
    return Dataset(train=train.take(tr_idx), val=train.take(val_idx), test=test)


def load_dataset_cached(source: str | None, cache_dir: str | Path, **settings) -> Dataset:
    """load_dataset(source, **settings), kept in the cache for local files: they are read, validated,
    subset and split once per setting, and every later trial process loads its rows from there instead
    of parsing both 25k-review files again (seconds of CPU and hundreds of MB per process)."""
    import sys

    from imdb_ray.cache import cache_key, cached, code_version, load_or_build

    identity = source_identity(source)
    if identity is None:  # a `datasets` id: its library caches the download
        return load_dataset(source, **settings)
    name = "data-" + cache_key(identity, settings, code_version(sys.modules[__name__]))
    state = cached(cache_dir, name)
    if state is None:
        dataset = load_dataset(source, **settings)  # bad data fails here, before the cache is touched
        state = load_or_build(cache_dir, name, lambda: _dataset_state(dataset))
    return Dataset(**{k: Split(v["texts"], v["labels"].numpy(), None if v["rows"] is None else v["rows"].numpy(),
                               None if v["groups"] is None else np.array(v["groups"], dtype=object))
                      for k, v in state.items()})


def _dataset_state(dataset: Dataset) -> dict:
    """A Dataset in the types the cache's weights-only loader reads back: lists, strings, tensors."""
    import torch

    return {k: {"texts": s.texts, "labels": torch.from_numpy(s.labels), "rows": None if s.rows is None else torch.from_numpy(s.rows),
                "groups": None if s.groups is None else s.groups.tolist()}
            for k, s in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test))}
