"""Data loading: the bundled official split, seeded stratified splits, cleaning, and bad-data errors."""
from __future__ import annotations

import gzip

import pandas as pd
import pytest

from imdb_ray.data import clean_text, load_dataset
from imdb_ray.errors import UserError


def test_bundled_imdb_is_the_official_split():
    ds = load_dataset(seed=0)
    assert len(ds.train) + len(ds.val) == 25_000 and len(ds.test) == 25_000
    assert 2_300 <= len(ds.val) <= 2_700  # whole movies (the default for data with movies): about 10%
    for split in (ds.train, ds.val, ds.test):
        assert abs(split.labels.mean() - 0.5) < 0.02  # balanced, without stratifying by label
    assert not any("<br" in t for t in ds.train.texts[:2000])  # cleaned by default
    # val is carved from train: disjoint rows (a few texts repeat inside IMDB's train split itself)
    assert len(set(ds.val.texts) & set(ds.train.texts)) <= 96


@pytest.mark.parametrize("val_split", ["random", "auto"])
def test_split_is_seeded_and_stratified(val_split):
    a = load_dataset(n_train=200, n_test=50, seed=1, val_split=val_split)
    b = load_dataset(n_train=200, n_test=50, seed=1, val_split=val_split)
    c = load_dataset(n_train=200, n_test=50, seed=2, val_split=val_split)
    assert a.train.texts == b.train.texts and a.val.texts == b.val.texts and a.test.texts == b.test.texts
    assert a.train.texts != c.train.texts
    assert a.test.labels.sum() == 25 and not set(a.val.texts) & set(a.train.texts)
    if val_split == "random":  # stratified by label; by movie, 20 rows of ~20 movies are near enough
        assert a.val.labels.sum() == 10 and len(a.val) == 20


def test_clean_text_removes_html():
    assert clean_text("Great film.<br /><br />Loved it &amp; more <i>really</i>") == "Great film. Loved it & more really"


def _write_pair(tmp_path, train: pd.DataFrame, test: pd.DataFrame | None = None, ext="csv"):
    test = train if test is None else test
    for name, frame in (("train", train), ("test", test)):
        path = tmp_path / f"{name}.{ext}"
        if ext == "csv":
            frame.to_csv(path, index=False)
        elif ext == "tsv":
            frame.to_csv(path, index=False, sep="\t")
        elif ext == "jsonl":
            frame.to_json(path, orient="records", lines=True)
        elif ext == "parquet":
            frame.to_parquet(path)
    return str(tmp_path)


GOOD = pd.DataFrame({"review": [f"text number {i}" for i in range(20)],
                     "sentiment": ["positive", "negative"] * 10})


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_other_formats_and_column_names(tmp_path, ext):
    ds = load_dataset(_write_pair(tmp_path, GOOD, ext=ext), text_column="review", label_column="sentiment", seed=0)
    assert len(ds.train) + len(ds.val) == 20 and set(ds.train.labels) == {0, 1}


def test_file_pair_and_gzip(tmp_path):
    with gzip.open(tmp_path / "a.csv.gz", "wt") as f:
        GOOD.rename(columns={"review": "text", "sentiment": "label"}).to_csv(f, index=False)
    ds = load_dataset(f"{tmp_path}/a.csv.gz,{tmp_path}/a.csv.gz", seed=0)
    assert len(ds.test) == 20


def test_a_data_file_is_parsed_once_while_it_is_unchanged(tmp_path, monkeypatch):
    """A reused trial process loads its data again for each trial: the parsed file is kept in memory,
    keyed by the files' size and mtime, so an edited file (or a new meta file) is read afresh."""
    import os

    from imdb_ray import data

    reads = []
    monkeypatch.setattr(data, "read_table", lambda path: reads.append(path.name) or pd.read_csv(path, dtype=str, keep_default_na=False))
    folder = _write_pair(tmp_path, GOOD.rename(columns={"review": "text", "sentiment": "label"}))
    first = load_dataset(folder, seed=0)
    assert load_dataset(folder, seed=0).train.texts == first.train.texts and sorted(reads) == ["test.csv", "train.csv"]
    edited = GOOD.rename(columns={"review": "text", "sentiment": "label"}).assign(text=lambda d: d.text + " edited")
    edited.to_csv(tmp_path / "train.csv", index=False)
    os.utime(tmp_path / "train.csv", ns=(1, 1))  # a new mtime even where the clock is coarse
    again = load_dataset(folder, seed=0)
    assert sorted(reads) == ["test.csv", "train.csv", "train.csv"] and all(t.endswith(" edited") for t in again.train.texts)
    pd.DataFrame({"movie_id": [str(i // 2) for i in range(20)]}).to_csv(tmp_path / "train_meta.csv", index=False)
    assert load_dataset(folder, seed=0).train.groups is not None and reads.count("train.csv") == 3  # groups appeared


def test_a_trials_splits_come_from_the_cache_while_the_files_are_unchanged(tmp_path):
    """load_trial_data keeps each data setting's splits in the cache (a trial process then reads its rows,
    not both 25k-review files): the same splits as load_dataset, rows and movie groups included; a new
    setting or an edited file is a new entry; bad data is refused before the cache folder exists."""
    import dataclasses
    import os

    from imdb_ray.config import TrialConfig
    from imdb_ray.train import load_trial_data

    cfg = TrialConfig(model="gru", n_train=300, n_test=60, cache_dir=str(tmp_path / "cache"))
    first, again = load_trial_data(cfg), load_trial_data(cfg)
    fresh = load_dataset(n_train=300, n_test=60)
    for split in ("train", "val", "test"):
        a, b, c = (getattr(d, split) for d in (first, again, fresh))
        assert a.texts == b.texts == c.texts and (a.labels == c.labels).all() and (b.rows == c.rows).all()
        assert (b.groups == c.groups).all() and b.labels.dtype == c.labels.dtype and b.groups.dtype == object
    log = tmp_path / "cache" / "builds.log"
    assert [line.split("-")[0] for line in log.read_text().splitlines()] == ["data"]  # read and split once
    assert load_trial_data(dataclasses.replace(cfg, split_seed=1)).train.texts != first.train.texts
    folder = _write_pair(tmp_path, GOOD.rename(columns={"review": "text", "sentiment": "label"}))
    mine = dataclasses.replace(cfg, data=folder, n_train=None, n_test=None)
    assert len(load_trial_data(mine).test) == 20 and len(log.read_text().splitlines()) == 3
    GOOD.rename(columns={"review": "text", "sentiment": "label"}).assign(text=lambda d: d.text + " edited").to_csv(
        tmp_path / "test.csv", index=False)
    os.utime(tmp_path / "test.csv", ns=(1, 1))  # a new mtime even where the clock is coarse
    assert all(t.endswith(" edited") for t in load_trial_data(mine).test.texts) and len(log.read_text().splitlines()) == 4
    (tmp_path / "bad").mkdir()
    GOOD.to_csv(tmp_path / "bad" / "train.csv", index=False)  # no 'text' column
    GOOD.to_csv(tmp_path / "bad" / "test.csv", index=False)
    with pytest.raises(UserError, match="missing column 'text'"):
        load_trial_data(dataclasses.replace(mine, data=str(tmp_path / "bad"), cache_dir=str(tmp_path / "untouched")))
    assert not (tmp_path / "untouched").exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda df: df.drop(columns=["label"]), "missing column 'label'"),
    (lambda df: df.assign(label=[0, 1] * 9 + [0, 7]), "row 20: label '7' is not 0/1"),
    (lambda df: df.assign(label=[0, 1] * 9 + [0, "great"]), "row 20: label 'great'"),
    (lambda df: df.assign(text=["a"] * 4 + [""] + ["b"] * 15), "row 5: empty text"),
    (lambda df: df.assign(label=[1] * 20), "every row has label 1"),
])
def test_bad_rows_name_file_and_row(tmp_path, mutate, message):
    frame = mutate(pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": [0, 1] * 10}))
    with pytest.raises(UserError, match=message) as err:
        load_dataset(_write_pair(tmp_path, frame), seed=0)
    assert "train.csv" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("rows, message", [
    # every text with an unquoted comma: pandas would read each row's first field as an index, the rest as the text
    (["Great film, loved it,1", "Dull, long,0"], r"line 2 has one field more than the header \(text, label\); put each text"),
    (["Great film,1", "Dull, long,0"], r"Expected 2 fields in line 3, saw 3; put each text that holds ',' in double quotes"),
    (["Great film,1", "Dull", "Fine,1"], r"row 2: no label \(empty, null, or a row with fewer fields than the header\)"),
    (["Great film,1", '"Dull from the start,0', "Fine,1"], r"EOF inside string .*; a text there opens a double quote that "
                                                          "nothing closes"),
])
def test_rows_of_another_width_or_an_open_quote_are_refused(tmp_path, rows, message):
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text("\n".join(["text,label", *rows]) + "\n")
    with pytest.raises(UserError, match=message):
        load_dataset(str(tmp_path), seed=0)


def test_bad_encoding_names_the_line(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"text,label\ngood,1\nbad \xff\xfe here,0\n")
    (tmp_path / "test.csv").write_bytes(b"text,label\ngood,1\nbad,0\n")
    with pytest.raises(UserError, match=r"train.csv: line 3 is not valid UTF-8"):
        load_dataset(str(tmp_path))


def test_missing_file_and_unknown_source(tmp_path):
    with pytest.raises(UserError, match="no test"):
        (tmp_path / "train.csv").write_text("text,label\na,1\n")
        load_dataset(str(tmp_path))
    with pytest.raises(UserError, match="data file not found"):
        load_dataset(f"{tmp_path}/nope.csv,{tmp_path}/nope2.csv")
    with pytest.raises(UserError, match=r"nope.csv: no such file or folder; give a folder"):  # a typo, not a hub id
        load_dataset(f"{tmp_path}/nope.csv")
    with pytest.raises(UserError, match=r"train.csv: one file; give a folder with train.\* and test.\* files"):
        load_dataset(str(tmp_path / "train.csv"))


def test_group_split_never_puts_a_movie_on_both_sides():
    """IMDB's movie of every review comes from the bundled meta file; a random split shares movies
    between train and validation, a grouped one (like the official train/test split) never does."""
    movie = pd.read_csv("data/imdb/train_meta.csv.gz").movie_id.to_numpy()  # by the source file's row
    shared = lambda ds: set(movie[ds.train.rows]) & set(movie[ds.val.rows])  # noqa: E731
    random = load_dataset(n_train=4000, n_test=100, seed=0, val_split="random")
    assert len(shared(random)) > 100
    for seed in (0, 1, 2):
        grouped = load_dataset(n_train=4000, n_test=100, seed=seed, val_split="group")
        assert not shared(grouped) and 300 <= len(grouped.val) <= 500  # whole movies: about 10%
        assert abs(grouped.val.labels.mean() - 0.5) < 0.1
    # the default ("auto") is by movie for the bundled data, which has movies
    default = load_dataset(n_train=4000, n_test=100, seed=0)
    assert default.val.rows.tolist() == load_dataset(n_train=4000, n_test=100, seed=0, val_split="group").val.rows.tolist()
    # rows point back at the source file, so predictions of different runs join review by review
    full = pd.read_csv("data/imdb/test.csv.gz")
    assert [clean_text(full.text[r]) for r in random.test.rows[:20]] == random.test.texts[:20]
    assert random.test.labels.tolist() == full.label[random.test.rows].tolist()


def test_group_column_of_user_data(tmp_path):
    rows = [{"text": f"review {i} {'good' if i % 2 else 'bad'}", "label": i % 2, "film": f"f{i // 4}"} for i in range(80)]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows[:20]).to_csv(tmp_path / "test.csv", index=False)
    ds = load_dataset(str(tmp_path), val_fraction=0.25, val_split="group", group_column="film")
    assert not set(ds.train.groups) & set(ds.val.groups) and len(ds.val) == 20
    with pytest.raises(UserError, match="val_split='group' needs a group column.*group_column"):
        load_dataset(str(tmp_path), val_split="group")  # the default group_column (movie_id) is not in this file
    # the default ("auto"): by group where the named column exists, else random and stratified
    auto = load_dataset(str(tmp_path), val_fraction=0.25, group_column="film")
    assert auto.val.rows.tolist() == ds.val.rows.tolist()
    no_groups = load_dataset(str(tmp_path), val_fraction=0.25)
    assert no_groups.val.groups is None and no_groups.val.labels.mean() == 0.5  # stratified


def test_length_buckets_cover_every_row_once_with_less_padding():
    import torch

    from imdb_ray.batching import LengthBuckets

    lengths = torch.randint(5, 257, (1000,), generator=torch.Generator().manual_seed(0))
    sampler = LengthBuckets(lengths, batch_size=32, chunk=10)
    sampler.set_epoch(1)
    epoch = list(sampler)
    assert len(epoch) == len(sampler) == 32 and sorted(i for b in epoch for i in b) == list(range(1000))
    sampler.set_epoch(1)
    assert list(sampler) == epoch  # a resumed epoch replays its order
    sampler.set_epoch(2)
    assert list(sampler) != epoch
    padded = sum(len(b) * int(lengths[b].max()) for b in epoch)
    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).split(32)
    assert padded < 0.7 * sum(len(b) * int(lengths[b].max()) for b in shuffled)  # what the collate computes


@pytest.mark.parametrize("max_tokens, batch_size", [(None, 32), (4096, 16)])  # 32 and 77 batches: padded to 33, 78
def test_ddp_ranks_take_turns_over_one_epoch_of_length_buckets(max_tokens, batch_size):
    """Several DDP workers: each rank takes every third batch of the epoch one worker would train on, the list
    padded with its first batches so that every rank takes as many steps (DDP would hang on a rank with none)."""
    import torch

    from imdb_ray.batching import LengthBuckets

    lengths = torch.randint(5, 513, (1000,), generator=torch.Generator().manual_seed(0))
    one = LengthBuckets(lengths, batch_size=batch_size, chunk=10, max_tokens=max_tokens)
    ranks = [LengthBuckets(lengths, batch_size=batch_size, chunk=10, max_tokens=max_tokens, shard=(r, 3)) for r in range(3)]
    for sampler in (one, *ranks):
        sampler.set_epoch(7)
    counts = [len(r) for r in ranks]
    whole, shards = list(one), [list(r) for r in ranks]
    assert len(whole) % 3 and counts == [len(s) for s in shards] == [-(-len(whole) // 3)] * 3  # padded: equal steps
    padded = whole + whole[:-len(whole) % 3]
    assert [shards[i % 3][i // 3] for i in range(len(padded))] == padded  # one worker's batches, taken in turns
    ranks[0].set_epoch(8)
    assert list(ranks[0]) != shards[0]  # a new share every epoch


def test_token_budget_batches_fit_their_budget_and_cover_every_row_once():
    import torch

    from imdb_ray.batching import LengthBuckets

    lengths = torch.randint(5, 513, (1000,), generator=torch.Generator().manual_seed(0))
    sampler = LengthBuckets(lengths, batch_size=16, chunk=10, max_tokens=4096)
    sampler.set_epoch(3)
    expected = len(sampler)  # counted before the epoch, from the same seed
    epoch = list(sampler)
    assert len(epoch) == expected and sorted(i for b in epoch for i in b) == list(range(1000))
    assert all(len(b) * int(lengths[b].max()) <= 4096 for b in epoch)
    assert max(len(b) for b in epoch) > 16 > min(len(b) for b in epoch)  # short rows share a step, long ones split
