"""Images per second the CIFAR-10 input pipeline delivers, with and without augmentation.

    python -m experiments.bench_pipeline [--images 10000] [--batch_size 128] [--epochs 3]

Uses the real CIFAR-10 training images if ``TFQ_NOISE_CIFAR10_DIR`` (or
``--cifar10_dir``) points at a binary copy, else random uint8 images of the same
shape (throughput does not depend on pixel values). The first epoch fills the
cache and is not timed. Compare with the model's training throughput: the
pipeline should be well above it.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import tfq_noise  # noqa: F401  (must precede TensorFlow)
from tfq_noise.data import cifar10, pipeline


def _images(num_images: int, cifar10_dir: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    directory = cifar10_dir or os.environ.get(cifar10.ENV_VAR)
    if directory:
        data = cifar10.load(cifar10_dir=directory)
        if num_images > len(data.train):
            raise ValueError(f"--images {num_images} exceeds the {len(data.train)} training images")
        return data.train.images[:num_images], data.train.labels[:num_images], data.source
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(num_images, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, size=num_images), "random uint8 (no CIFAR-10 directory given)"


def measure(images: np.ndarray, labels: np.ndarray, batch_size: int, augment: bool, epochs: int) -> float:
    """Images per second over ``epochs`` timed epochs, after one warm-up epoch."""
    mean, std = pipeline.channel_stats(images)
    dataset = pipeline.make_dataset(
        images, labels, batch_size, training=True, augment=augment, seed=0, mean=mean, std=std
    )
    for _ in dataset:  # warm-up: fills the cache, traces the functions
        pass
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in dataset:
            pass
    return epochs * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per setting")
    parser.add_argument("--cifar10_dir", default=None)
    args = parser.parse_args()
    images, labels, source = _images(args.images, args.cifar10_dir)
    print(f"data: {source}; {len(images)} images, batch {args.batch_size}, {args.epochs} timed epochs")
    print(f"{'augmentation':<14}{'images/s':>12}")
    for augment in (False, True):
        rate = measure(images, labels, args.batch_size, augment, args.epochs)
        print(f"{'on' if augment else 'off':<14}{rate:>12,.0f}")


if __name__ == "__main__":
    main()
