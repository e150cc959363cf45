"""The ``fastsoftmax`` command line (also ``python -m fastsoftmax``)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np


def _split(X: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Shuffle the rows once and split them into train and test parts."""
    order = np.random.default_rng(seed).permutation(X.shape[0])
    n_test = int(round(test_fraction * X.shape[0]))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]


def run_demo(args: argparse.Namespace) -> int:
    """The textbook experiment: the fused model and the NumPy reference side by side."""
    from fastsoftmax import SoftmaxRegression
    from fastsoftmax.datasets import make_classification
    from fastsoftmax.reference import SoftmaxRegressionNumPy

    X, y = make_classification(
        args.samples, args.features, n_informative=15, n_redundant=0, n_classes=3,
        n_clusters_per_class=1, seed=args.seed,
    )  # fmt: skip
    X_train, y_train, X_test, y_test = _split(X, y, 0.2, args.seed)
    fast = SoftmaxRegression(X.shape[1], 3, seed=args.seed)
    reference = SoftmaxRegressionNumPy(X.shape[1], 3, seed=args.seed)
    print(
        f"Textbook experiment: {X.shape[0]} samples x {X.shape[1]} features, 3 classes, "
        f"80/20 split, {args.epochs} epochs of full-batch gradient descent at lr {args.lr}."
    )
    print("Compiling the kernels (cached on disk after the first run)...", flush=True)
    start = time.perf_counter()
    SoftmaxRegression(X.shape[1], 3).train_step(X_train, y_train, lr=0.0)
    print(f"  ready in {time.perf_counter() - start:.1f} s\n")

    header = f"{'epoch':>5}  {'loss (fast)':>12}  {'loss (NumPy)':>12}  {'train acc':>9}  {'test acc':>8}"
    print(header)
    print("-" * len(header))
    fast_times, reference_times = [], []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        fast_loss = fast.train_step(X_train, y_train, args.lr)
        t1 = time.perf_counter()
        reference_loss = reference.train_step(X_train, y_train, args.lr)
        t2 = time.perf_counter()
        fast_times.append(t1 - t0)
        reference_times.append(t2 - t1)
        if epoch % 20 == 0 or epoch == 1:
            print(
                f"{epoch:>5}  {fast_loss:>12.6f}  {reference_loss:>12.6f}  "
                f"{fast.accuracy(X_train, y_train):>9.3f}  {fast.accuracy(X_test, y_test):>8.3f}"
            )
    fast_accuracy = fast.accuracy(X_test, y_test)
    reference_accuracy = reference.accuracy(X_test, y_test)
    weight_difference = max(
        float(np.max(np.abs(fast.W - reference.W))), float(np.max(np.abs(fast.b - reference.b)))
    )
    fast_step = statistics.median(fast_times)
    reference_step = statistics.median(reference_times)
    print()
    print(f"final test accuracy: fast {fast_accuracy:.3f}, NumPy reference {reference_accuracy:.3f}")
    print(f"largest difference between the two models' weights: {weight_difference:.3e}")
    print(
        f"median time per step: fast {fast_step * 1e6:.0f} us, NumPy {reference_step * 1e6:.0f} us "
        f"(speed-up {reference_step / fast_step:.1f}x)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastsoftmax",
        description="Softmax regression on fused Numba kernels.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="train the fused model and the NumPy reference side by side (the textbook experiment)",
        description="Synthetic 3-class problem, 80/20 split, full-batch gradient descent.",
    )
    demo.add_argument("--samples", type=int, default=1000, help="number of rows (default 1000)")
    demo.add_argument("--features", type=int, default=20, help="number of features (default 20)")
    demo.add_argument("--epochs", type=int, default=100, help="gradient steps (default 100)")
    demo.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    demo.add_argument("--seed", type=int, default=42, help="seed for data and weights (default 42)")
    demo.set_defaults(handler=run_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastsoftmax`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"fastsoftmax {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
