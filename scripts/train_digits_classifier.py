"""Train the digits feature classifier (Fréchet-distance metric) and commit-ready weights.

    python scripts/train_digits_classifier.py [--epochs 40] [--seed 0]

Writes ``diffflow_core/assets/digits_classifier.pt`` (a plain state dict) and ``digits_classifier.json``
(test accuracy and the train-vs-test Fréchet floor) and prints both. Deterministic on CPU.
"""
from __future__ import annotations

import argparse
import time

import torch

from diffflow_core.metrics.digits import REPORT, WEIGHTS, frechet_floor, save_classifier, train_digits_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    model, accuracy = train_digits_classifier(epochs=args.epochs, seed=args.seed)
    floor = frechet_floor(model)
    save_classifier(model, accuracy, floor)
    print(f"test accuracy {accuracy:.4f}, Fréchet floor (test vs train) {floor:.4f}, "
          f"{time.perf_counter() - start:.1f} s -> {WEIGHTS}, {REPORT}")


if __name__ == "__main__":
    main()
