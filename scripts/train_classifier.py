"""Train the classifier feature network of ``digits`` or ``mnist`` reproducibly and write its weights file.

Usage (from the repository root)::

    python scripts/train_classifier.py digits                       # rebuilds the shipped weights
    python scripts/train_classifier.py mnist --root /path/to/mnist  # -> ~/.cache/scoresde/weights/

The digits weights shipped in ``scoresde/evaluation/weights/digits_classifier.pt`` were produced by the
first command (defaults: seed 0, 60 epochs, 1 thread). The run is deterministic for a given seed, thread
count and machine; training uses the train split only, and the test split is only evaluated at the end
(its accuracy is printed and stored in the file's metadata). Nothing is downloaded: digits ship with
scikit-learn and MNIST is read from local IDX files.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from scoresde.evaluation.classifier import (
    DIGITS_WEIGHTS_FILE,
    MNIST_WEIGHTS_FILE,
    classifier_accuracy,
    load_classifier,
    save_classifier,
    train_classifier,
)
from scoresde.evaluation.stats import data_hash
from scoresde.evaluation.weight_files import default_weights_dir, package_weights_dir

#: Per-data-set recipe: training hyper-parameters and the default output file.
RECIPES = {
    "digits": dict(epochs=60, batch_size=64, lr=2e-3, weight_decay=1e-4, max_shift=1, widths=(32, 64),
                   num_features=128, dropout=0.3),
    "mnist": dict(epochs=5, batch_size=128, lr=1e-3, weight_decay=1e-4, max_shift=2, widths=(32, 64),
                  num_features=128, dropout=0.3),
}


def default_output(dataset: str) -> Path:
    """Digits: the package's weights directory (shipped); MNIST: the user weights directory."""
    if dataset == "digits":
        return package_weights_dir() / DIGITS_WEIGHTS_FILE
    return default_weights_dir() / MNIST_WEIGHTS_FILE


def load_splits(dataset: str, root: str | None):
    """``(x_train, y_train, x_test, y_test, levels)`` from the project's data modules."""
    if dataset == "digits":
        from scoresde.data.digits import DIGITS_LEVELS, load_digits_splits

        splits, levels = load_digits_splits(), DIGITS_LEVELS
    else:
        from scoresde.data.mnist import load_mnist

        if root is None:
            from scoresde.data import default_data_root

            root = str(default_data_root() / "mnist")
        splits, levels = load_mnist(root), 256
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    return xtr, ytr, xte, yte, levels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", choices=sorted(RECIPES))
    p.add_argument("--root", help="MNIST directory with the IDX files (default: $SCORESDE_DATA_DIR/mnist)")
    p.add_argument("--out", help="weights file to write (default: see module docstring)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    p.add_argument("--threads", type=int, default=1, help="torch threads (results depend on it; default 1)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Train, evaluate, write; returns the path of the weights file."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = dict(RECIPES[args.dataset])
    if args.epochs is not None:
        recipe["epochs"] = args.epochs
    out = Path(args.out).expanduser() if args.out else default_output(args.dataset)
    xtr, ytr, xte, yte, levels = load_splits(args.dataset, args.root)
    say = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    say(f"training the {args.dataset} classifier on {len(xtr)} images ({recipe}, seed {args.seed}, "
        f"{args.threads} thread(s))")
    t0 = time.perf_counter()
    model = train_classifier(xtr, ytr, levels=levels, seed=args.seed, log=say, **recipe)
    seconds = time.perf_counter() - t0
    train_acc = classifier_accuracy(model, xtr, ytr)
    test_acc = classifier_accuracy(model, xte, yte)
    command = "python scripts/train_classifier.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    meta = {
        "dataset": args.dataset,
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "num_train": len(xtr),
        "num_test": len(xte),
        "train_data_sha256": data_hash(xtr),
        "seed": args.seed,
        "threads": args.threads,
        "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in recipe.items()},
        "command": command,
        "torch": str(torch.__version__),
        "train_seconds": round(seconds, 1),
    }
    save_classifier(model, out, meta)
    fingerprint = load_classifier(out, args.dataset).fingerprint
    say(f"train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f} ({seconds:.0f} s)")
    say(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB), fingerprint {fingerprint.split(':')[1]}")
    return out


if __name__ == "__main__":
    main()
