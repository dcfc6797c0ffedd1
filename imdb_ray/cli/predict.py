"""`predict`: texts, files or tables through a trained model."""
from __future__ import annotations

import argparse
from pathlib import Path
import sys

from imdb_ray.cli.options import DEFAULT_URI, check_creatable, positive_int
from imdb_ray.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p_pred = sub.add_parser("predict", help="classify texts with a trained model")
    p_pred.add_argument("model", help="a `train` run folder or model folder, an MLflow run id, sweep:NAME (its best trial), "
                        "or models:/imdb_ray-NAME@champion")
    p_pred.add_argument("texts", nargs="*", help="texts to classify ('-' or none: read lines from stdin)")
    p_pred.add_argument("--file", help="one text per line (split on \\n only; '-': stdin), or a .csv/.tsv/.jsonl/.parquet table (.gz too)")
    p_pred.add_argument("--text-column", default="text", help="the table's text column (default text)")
    p_pred.add_argument("--id-column", help="the table's id column (default: the row number)")
    p_pred.add_argument("--label-column", help="the table's label column: print accuracy, macro-F1 and a 95%% interval")
    p_pred.add_argument("--labels", help="a file with one label per input row (0/1, neg/pos): print accuracy etc.")
    p_pred.add_argument("--out", help="write id, label, prob_negative, prob_positive to this .csv or .jsonl")
    p_pred.add_argument("--with-text", action="store_true", help="--out: include each row's text")
    p_pred.add_argument("--batch-size", type=positive_int("--batch-size"), default=64, help="texts per forward pass (default 64)")
    p_pred.add_argument("--tracking-uri", help=f"MLflow store for run ids and sweep:NAME (default {DEFAULT_URI})")
    p_pred.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="imdb_ray_predict_") as downloads:  # a model from MLflow, for this command
        return predict(args, downloads)


def predict(args: argparse.Namespace, downloads: str) -> int:
    from imdb_ray import tracking
    from imdb_ray.bundle import Predictor
    from imdb_ray.tracking.reads import resolve_model_source
    from imdb_ray.predict import Chunk, Writer, label_lines, read_chunks, score

    if args.labels and args.label_column:
        raise UserError("give --labels FILE or --label-column, not both")
    if args.out:
        check_creatable(Path(args.out).parent, "give --out a file in a writable folder")
    typed = [] if args.file or args.texts == ["-"] else args.texts  # texts given as arguments
    refuse_file_names(typed)
    if args.file:  # check the inputs before loading a model
        chunks = read_chunks(args.file, text_column=args.text_column, id_column=args.id_column,
                             label_column=args.label_column)
    elif typed:
        chunks = iter([Chunk([str(i + 1) for i in range(len(typed))], typed)])
    else:
        chunks = read_chunks(None)
    labels = label_lines(args.labels) if args.labels else None
    predictor = Predictor(resolve_model_source(args.model, tracking.resolve_tracking_uri(args.tracking_uri), downloads))
    writer, complete = Writer(args.out, with_text=args.with_text), False
    try:
        scored = score(predictor, chunks, writer, labels=labels, progress=args.out is not None, batch_size=args.batch_size)
        if labels is not None and next(labels, None) is not None:
            raise UserError(f"--labels {args.labels} has more lines than the input has rows ({scored.rows})")
        if scored.rows == 0:
            raise UserError("no text to classify: give texts as arguments, --file FILE, or lines on stdin")
        complete = True
    finally:  # --out gets every row or keeps what it held: a refused input, Ctrl-C or a crash writes nothing there
        writer.close(keep=complete)
    for i, text in enumerate(typed, 1):  # after the scores: a refused input stays one line
        if not text.strip():  # likely an unset shell variable; scored all the same (row N out is row N in)
            print(f"warning: text {i} is empty: it is scored as a review with no words", file=sys.stderr)
    if args.out:
        print(f"{scored.rows} row(s) scored -> {args.out}", file=sys.stderr)
    if scored.labels:
        m = scored.metrics()
        print(f"accuracy {m['accuracy']:.4f} (95% CI {m['ci_low']:.4f}-{m['ci_high']:.4f}), macro-F1 {m['f1']:.4f} "
              f"on {len(scored.labels)} labelled row(s)", file=sys.stderr)
    return 0


FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet", ".txt", ".gz")


def refuse_file_names(texts: list[str]) -> None:
    """A text argument that is a file's name (`predict MODEL reviews.csv`) would be scored as that one word: refuse it,
    naming --file. A review is words, so only a single word that is a file here or ends like one is taken for a name."""
    for text in texts:
        if not text or any(c.isspace() for c in text):
            continue
        exists = Path(text).is_file()
        if exists or text.lower().endswith(FILE_SUFFIXES):
            where = "a file here" if exists else "a file name (and no such file is here)"
            raise UserError(f"{text!r} is {where}: give a file with --file {text}; texts given as arguments are scored "
                            "as written")
