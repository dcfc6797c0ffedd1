"""`predict` on files: every row in gives exactly one row out, in order, whatever characters the
texts hold; every input format; CSV/JSONL output; labels give the run's own test metrics."""
from __future__ import annotations

import csv
import gzip
import json

import pandas as pd
import pytest

from helpers import cli
from imdb_ray.data import load_dataset

# Texts that break naive line splitting: U+0085 (NEL) and U+2028 are line breaks to str.splitlines(),
# 772 official IMDB test reviews hold U+0085; a lone \r, tabs, quotes, commas, empty rows.
AWKWARD = ["A fine film.", "", "bad\u0085worse", "line\u2028separator", "lone\rreturn", 'say "hi", then\tgo',
           "   ", "trailing backslash \\", "ünïcödé ✓", "last"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small cnn trained by the CLI on 240 reviews, tested on 100 official test reviews."""
    from imdb_ray.__main__ import main

    folder = tmp_path_factory.mktemp("predict_files")
    assert main(["train", "--model", "cnn", "--n-train", "240", "--n-test", "100", "--max-len", "64", "--embed-dim", "16",
                 "--w2v-epochs", "1", "--epochs", "1", "--cache-dir", str(folder / "cache"), "--run-dir", str(folder / "run"),
                 "--num-filters", "8", "--quiet"]) == 0
    return folder / "run"


def read_out(path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return list(csv.DictReader(open(path, encoding="utf-8", newline="")))


def test_every_line_is_one_row_out_in_order(run_dir, tmp_path, capsys):
    lines = tmp_path / "texts.txt"
    lines.write_bytes(("\r\n".join(AWKWARD[:3]) + "\n" + "\n".join(AWKWARD[3:]) + "\n").encode("utf-8"))  # \r\n tolerated
    code, err, _ = cli(["predict", str(run_dir), "--file", str(lines), "--out", str(tmp_path / "out.csv"), "--with-text"], capsys)
    assert code == 0, err
    rows = read_out(tmp_path / "out.csv")
    assert [r["id"] for r in rows] == [str(i) for i in range(1, len(AWKWARD) + 1)]
    assert [r["text"] for r in rows] == AWKWARD  # the very same texts, aligned
    for r in rows:
        assert r["label"] in ("positive", "negative")
        assert abs(float(r["prob_negative"]) + float(r["prob_positive"]) - 1) < 1e-5
        assert (r["label"] == "positive") == (float(r["prob_positive"]) >= 0.5)
    # stdout: one line per row too, whatever the text holds
    code, err, out = cli(["predict", str(run_dir), "--file", str(lines)], capsys)
    assert code == 0 and len(out.rstrip("\n").split("\n")) == len(AWKWARD)


def test_an_empty_text_argument_is_scored_with_a_warning(run_dir, capsys):
    """An empty argument (often an unset shell variable) keeps its row, and stderr says so."""
    code, err, out = cli(["predict", str(run_dir), "a fine film", " "], capsys)
    assert code == 0 and len(out.rstrip("\n").split("\n")) == 2
    assert err == ["warning: text 2 is empty: it is scored as a review with no words"], err
    for bad in ([str(run_dir.parent / "nosuch"), ""], [str(run_dir), "", "--labels", str(run_dir / "config.json")]):
        code, err, _ = cli(["predict", *bad], capsys)  # a refused input is still its one line alone
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.jsonl", "in.parquet", "in.csv.gz"])
def test_every_table_format_with_ids_gives_the_same_scores(run_dir, tmp_path, capsys, name):
    frame = pd.DataFrame({"review_id": [f"r{i}" for i in range(len(AWKWARD))], "body": AWKWARD})
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    elif name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif name.endswith(".gz"):
        path.write_bytes(gzip.compress(frame.to_csv(index=False, quoting=csv.QUOTE_ALL).encode("utf-8")))
    else:  # quoted, as a CSV writer must quote a field holding a line break ("\r" included)
        frame.to_csv(path, index=False, sep="\t" if name.endswith(".tsv") else ",", quoting=csv.QUOTE_ALL)
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(AWKWARD) + "\n", encoding="utf-8")
    assert cli(["predict", str(run_dir), "--file", str(lines), "--out", str(tmp_path / "ref.jsonl")], capsys)[0] == 0
    code, err, _ = cli(["predict", str(run_dir), "--file", str(path), "--text-column", "body", "--id-column", "review_id",
                        "--out", str(tmp_path / "out.jsonl")], capsys)
    assert code == 0, err
    rows, ref = read_out(tmp_path / "out.jsonl"), read_out(tmp_path / "ref.jsonl")
    assert [r["id"] for r in rows] == list(frame["review_id"])
    assert [r["prob_positive"] for r in rows] == [r["prob_positive"] for r in ref]


def test_labels_give_the_runs_own_test_metrics(run_dir, tmp_path, capsys):
    test = load_dataset(n_train=240, n_test=100, seed=0).test  # the run's test reviews
    table = tmp_path / "test.csv"
    pd.DataFrame({"text": test.texts, "label": test.labels}).to_csv(table, index=False)
    code, err, _ = cli(["predict", str(run_dir), "--file", str(table), "--label-column", "label",
                        "--out", str(tmp_path / "scored.csv")], capsys)
    assert code == 0, err
    summary = json.loads((run_dir / "metrics.json").read_text())["summary"]
    line = [e for e in err if e.startswith("accuracy ")][0]
    assert line.startswith(f"accuracy {summary['test_accuracy']:.4f} (95% CI ")
    assert f"macro-F1 {summary['test_f1']:.4f} on 100 labelled row(s)" in line
    low, high = (float(x) for x in line.split("95% CI ")[1].split(")")[0].split("-"))
    assert low <= summary["test_accuracy"] <= high
    # the same from a text file and --labels FILE
    (tmp_path / "texts.txt").write_text("\n".join(t.replace("\n", " ") for t in test.texts) + "\n", encoding="utf-8")
    (tmp_path / "labels.txt").write_text("\n".join("pos" if y else "neg" for y in test.labels) + "\n")
    code, err2, _ = cli(["predict", str(run_dir), "--file", str(tmp_path / "texts.txt"), "--labels", str(tmp_path / "labels.txt"),
                         "--out", str(tmp_path / "scored2.csv")], capsys)
    assert code == 0 and [e for e in err2 if e.startswith("accuracy ")] == [line]


@pytest.mark.parametrize("argv, message", [
    (["--file", "{tmp}/in.csv", "--text-column", "review"], "--text-column 'review' is not a column (columns: text, label)"),
    (["--file", "{tmp}/in.csv", "--label-column", "stars"], "--label-column 'stars' is not a column"),
    (["--file", "{tmp}/texts.txt", "--label-column", "label"], "a plain text file has no columns"),
    (["--file", "{tmp}/in.csv", "--out", "{tmp}/out.xlsx"], "--out {tmp}/out.xlsx: write .csv or .jsonl"),
    (["--file", "{tmp}/texts.txt", "--labels", "{tmp}/short.txt"], "has more rows than --labels"),
    (["--file", "{tmp}/texts.txt", "--labels", "{tmp}/long.txt"], "has more lines than the input has rows (2)"),
    (["--file", "{tmp}/bad_label.csv", "--label-column", "label"], "bad_label.csv: row 2: label 'maybe' is not 0/1"),
    (["--file", "{tmp}/empty.txt", "--out", "{tmp}/out.csv"], "no text to classify"),
    (["--file", "{tmp}/texts.txt", "--labels", "{tmp}/long.txt", "--out", "{tmp}/out.csv"], "has more lines than the input"),
    # unquoted commas in every text: pandas would take each row's first field as an index and score the rest
    (["--file", "{tmp}/unquoted.csv"], "unquoted.csv: line 2 has one field more than the header (text, label); put each "
                                       "text that holds ',' in double quotes"),
    # a file named where texts go would be scored as that one word
    (["{tmp}/in.csv", "--out", "{tmp}/out.csv"], "'{tmp}/in.csv' is a file here: give a file with --file {tmp}/in.csv"),
    (["reviews.csv"], "'reviews.csv' is a file name (and no such file is here): give a file with --file reviews.csv"),
])
def test_bad_prediction_input_is_one_line(run_dir, tmp_path, capsys, argv, message):
    (tmp_path / "in.csv").write_text("text,label\ngood,1\nbad,0\n")
    (tmp_path / "bad_label.csv").write_text("text,label\ngood,1\nbad,maybe\n")
    (tmp_path / "unquoted.csv").write_text("text,label\nGreat film, loved it,1\nDull, long,0\n")
    (tmp_path / "texts.txt").write_text("good\nbad\n")
    (tmp_path / "short.txt").write_text("1\n")
    (tmp_path / "long.txt").write_text("1\n0\n1\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "out.csv").write_text("id,label\nearlier,positive\n")  # an earlier run's predictions
    code, err, _ = cli(["predict", str(run_dir), *[a.replace("{tmp}", str(tmp_path)) for a in argv]], capsys)
    err = [line for line in err if not line.startswith("predict: ")]  # --out's progress bar
    assert code == 2 and len(err) == 1 and message.replace("{tmp}", str(tmp_path)) in err[0], err
    assert (tmp_path / "out.csv").read_text() == "id,label\nearlier,positive\n", "a refused predict overwrote --out"
    assert not list(tmp_path.glob(".*.part")), "a refused predict left its partial output behind"


def test_a_missing_labels_file_is_refused_before_any_row_is_printed(run_dir, tmp_path, capsys):
    code, err, out = cli(["predict", str(run_dir), "good", "bad", "--labels", str(tmp_path / "nosuch.txt")], capsys)
    assert (code, err, out) == (2, [f"error: --labels {tmp_path / 'nosuch.txt'}: no such file"], "")


def test_texts_and_labels_from_pipes(run_dir, tmp_path, capsys):
    """`--file <(zcat reviews.gz) --labels <(cut ...)`: what a shell's process substitution passes, a
    /dev/fd path to a pipe, reads like the file it streams."""
    import os

    (tmp_path / "texts.txt").write_text("good\nbad\n")
    _, _, from_file = cli(["predict", str(run_dir), "--file", str(tmp_path / "texts.txt")], capsys)
    pipes = []
    for data in (b"good\nbad\n", b"1\n0\n"):
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        pipes.append(f"/dev/fd/{read}")
    try:
        code, err, out = cli(["predict", str(run_dir), "--file", pipes[0], "--labels", pipes[1]], capsys)
    finally:
        for path in pipes:
            os.close(int(path.rsplit("/", 1)[1]))
    assert code == 0 and out == from_file and len(out.splitlines()) == 2
    assert [line for line in err if line.startswith("accuracy ")], err


@pytest.mark.parametrize("model", ["tfidf_lr", "nbsvm"])
def test_a_baseline_is_a_bundle_that_predicts_its_runs_test_metrics(tmp_path, capsys, model):
    """The baseline's bundle: vocabulary, idf (tfidf_lr) and weights as tensors (weights_only), no pickle."""
    code, err, _ = cli(["train", "--model", model, "--n-train", "240", "--n-test", "100", "--run-dir",
                        str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, err
    assert {p.name for p in (tmp_path / "run" / "model").iterdir()} == {"config.json", "weights.pt"}
    test = load_dataset(n_train=240, n_test=100, seed=0).test
    pd.DataFrame({"text": test.texts, "label": test.labels}).to_csv(tmp_path / "test.csv", index=False)
    code, err, _ = cli(["predict", str(tmp_path / "run"), "--file", str(tmp_path / "test.csv"), "--label-column", "label",
                        "--out", str(tmp_path / "scored.jsonl")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())["summary"]
    assert any(e.startswith(f"accuracy {summary['test_accuracy']:.4f} ") and f"macro-F1 {summary['test_f1']:.4f}" in e
               for e in err)
    assert len(read_out(tmp_path / "scored.jsonl")) == 100


def test_the_mlflow_pyfunc_answers_what_predict_writes(run_dir, tmp_path, capsys):
    """The pyfunc wraps the same Predictor: loaded in a fresh process (no training data, no cache),
    its labels and probabilities equal `predict --out` for the same texts."""
    import subprocess
    import sys

    from imdb_ray.pyfunc import save_pyfunc

    model = save_pyfunc(run_dir / "model", tmp_path / "pyfunc")
    assert (model / "MLmodel").is_file()
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(AWKWARD) + "\n", encoding="utf-8")
    assert cli(["predict", str(run_dir), "--file", str(texts), "--out", str(tmp_path / "out.csv")], capsys)[0] == 0
    script = ("import json, sys, mlflow.pyfunc, pandas as pd\n"
              "texts = json.load(open(sys.argv[2]))\n"
              "print(mlflow.pyfunc.load_model(sys.argv[1]).predict(pd.DataFrame({'text': texts})).to_json(orient='records'))\n")
    (tmp_path / "texts.json").write_text(json.dumps(AWKWARD))
    proc = subprocess.run([sys.executable, "-c", script, str(model), str(tmp_path / "texts.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    written = read_out(tmp_path / "out.csv")
    assert [s["label"] for s in served] == [w["label"] for w in written]
    assert [s["prob_positive"] for s in served] == pytest.approx([float(w["prob_positive"]) for w in written], abs=1e-5)
