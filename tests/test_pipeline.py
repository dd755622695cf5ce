"""tf.data pipeline: statistics, normalization, shuffling, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

import tfq_noise  # noqa: F401
import tensorflow as tf

from tfq_noise.data import pipeline

N = 100


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(N, 8, 8, 3), dtype=np.uint8)


def _collect(dataset):
    return [np.concatenate(parts) for parts in zip(*dataset.as_numpy_iterator())]


def test_channel_stats_match_numpy(images):
    mean, std = pipeline.channel_stats(images, chunk_size=7)  # chunks must not matter
    flat = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, flat.std(axis=0), rtol=1e-5)
    assert mean.dtype == std.dtype == np.float32 and mean.shape == (3,)
    with pytest.raises(ValueError, match="non-empty"):
        pipeline.channel_stats(images[:0])


def test_eval_keeps_order_and_normalizes(images):
    labels = np.arange(N)
    mean, std = pipeline.channel_stats(images)
    x, y = _collect(pipeline.make_dataset(images, labels, 32, training=False, mean=mean, std=std))
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(x, (images.astype(np.float32) - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.reshape(-1, 3).mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(x.reshape(-1, 3).std(axis=0), 1, atol=1e-4)
    scaled, _ = _collect(pipeline.make_dataset(images, labels, 32, training=False))
    np.testing.assert_allclose(scaled, images / 255.0, atol=1e-6)


def test_training_shuffles_reproducibly_without_augmenting_by_default(images):
    labels = np.arange(N)
    dataset = pipeline.make_dataset(images, labels, 16, training=True, seed=3)
    x1, y1 = _collect(dataset)
    x2, y2 = _collect(dataset)  # second epoch
    assert sorted(y1) == list(labels) and not np.array_equal(y1, labels)
    assert not np.array_equal(y1, y2), "reshuffled every epoch"
    # No augmentation by default: every image is exactly its (scaled) original.
    np.testing.assert_allclose(x1, images[y1] / 255.0, atol=1e-6)
    rebuilt = pipeline.make_dataset(images, labels, 16, training=True, seed=3)
    r1, r2 = _collect(rebuilt)[1], _collect(rebuilt)[1]
    np.testing.assert_array_equal(r1, y1)
    np.testing.assert_array_equal(r2, y2)
    other = _collect(pipeline.make_dataset(images, labels, 16, training=True, seed=4))[1]
    assert not np.array_equal(other, y1)


def test_augmentation_is_pad4_crop_and_flip(images):
    labels = np.arange(N)
    dataset = pipeline.make_dataset(images, labels, 16, training=True, augment=True, seed=1)
    x, y = _collect(dataset)
    assert x.shape == images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets, flips = set(), 0
    for out, index in zip(np.rint(x * 255).astype(np.uint8), y):
        candidates = [
            (top, left, flip)
            for top in range(9)
            for left in range(9)
            for flip in (False, True)
            if np.array_equal(
                out,
                (lambda c: c[:, ::-1] if flip else c)(padded[index, top : top + 8, left : left + 8]),
            )
        ]
        assert candidates, f"image {index} is not a crop/flip of its padded original"
        offsets.add(candidates[0][:2])
        flips += candidates[0][2]
    assert len(offsets) > 20 and 20 < flips < 80  # offsets and flips really vary
    x_again, y_again = _collect(pipeline.make_dataset(images, labels, 16, training=True, augment=True, seed=1))
    np.testing.assert_array_equal(x_again, x)
    np.testing.assert_array_equal(y_again, y)
    x_next, _ = _collect(dataset)
    assert not np.array_equal(x_next, x), "fresh augmentation every epoch"


def test_flip_augmentation_only_flips(images):
    labels = np.arange(N)
    x, y = _collect(pipeline.make_dataset(images, labels, 16, training=True, augment="flip", seed=2))
    flips = 0
    for out, index in zip(np.rint(x * 255).astype(np.uint8), y):
        same, flipped = np.array_equal(out, images[index]), np.array_equal(out, images[index][:, ::-1])
        assert same or flipped, f"image {index} is neither the original nor its mirror"
        flips += flipped and not same
    assert 20 < flips < 80
    none = _collect(pipeline.make_dataset(images, labels, 16, training=True, augment="none", seed=2))[0]
    off = _collect(pipeline.make_dataset(images, labels, 16, training=True, augment=False, seed=2))[0]
    np.testing.assert_array_equal(none, off)
    with pytest.raises(ValueError, match="augment must be one of"):
        pipeline.make_dataset(images, labels, 16, training=True, augment="rotate")


def test_random_crop_keeps_shape_of_rectangular_batches():
    batch = tf.zeros([3, 10, 14, 2], tf.uint8)
    out = pipeline.random_crop_and_flip(batch, tf.constant([1, 2], tf.int64))
    assert out.shape == (3, 10, 14, 2) and out.dtype == tf.uint8


def test_multilabel_targets_and_sample_weights(images):
    targets = np.random.default_rng(1).integers(0, 2, size=(N, 12)).astype(np.float32)
    weights = np.random.default_rng(2).integers(0, 2, size=(N, 12))
    dataset = pipeline.make_dataset(images, targets, 10, training=True, augment=True, sample_weights=weights)
    assert dataset.element_spec[1].dtype == tf.float32 and len(dataset.element_spec) == 3
    x, y, w = _collect(dataset)
    order = [int(np.flatnonzero((targets == row).all(axis=1) & (weights == wrow).all(axis=1))[0]) for row, wrow in zip(y, w)]
    np.testing.assert_array_equal(y, targets[order])
    assert w.dtype == np.float32


def test_bad_inputs(images):
    labels = np.arange(N)
    with pytest.raises(ValueError, match="training=True"):
        pipeline.make_dataset(images, labels, 8, training=False, augment=True)
    with pytest.raises(ValueError, match="both mean and std"):
        pipeline.make_dataset(images, labels, 8, training=False, mean=[1, 2, 3])
    with pytest.raises(ValueError, match="std must be positive"):
        pipeline.make_dataset(images, labels, 8, training=False, mean=[1, 2, 3], std=[1, 0, 1])
    with pytest.raises(ValueError, match="uint8"):
        pipeline.make_dataset(images.astype(np.float32), labels, 8, training=False)
    with pytest.raises(ValueError, match="N=100"):
        pipeline.make_dataset(images, labels[:-1], 8, training=False)
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.make_dataset(images, labels, 0, training=False)
