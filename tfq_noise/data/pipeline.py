"""tf.data input pipeline for in-memory image arrays (CIFAR-10, FER+).

Order of stages: cache (raw uint8) -> shuffle (training only) -> batch ->
augment (training only, optional) -> normalize -> prefetch. Augmentation and
normalization run on whole batches, which is several times faster on CPU than
per-image map calls.

Randomness is seeded and reproducible: the shuffle order and the augmentation
differ from epoch to epoch but the sequence of epochs is the same on every run
with the same seed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

import tfq_noise  # noqa: F401  (selects tf_keras before TensorFlow is imported)
import tensorflow as tf

AUGMENT_PADDING = 4
# Training-time augmentations by name: none, horizontal flip, 4-pixel pad + crop and flip.
AUGMENTATIONS = ("none", "flip", "crop_flip")


def augmentation_mode(augment) -> str:
    """The augmentation's name; ``True``/``False`` (older configs) mean ``crop_flip``/``none``."""
    if isinstance(augment, bool) or augment is None:
        return "crop_flip" if augment else "none"
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS} (or a bool), got {augment!r}")
    return augment


def channel_stats(images: np.ndarray, chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation, in pixel units (0..255 for uint8).

    Computed in float64 over chunks, so 50,000 CIFAR images need no 1 GB copy.

    Args:
      images: [N, H, W, C] array (any numeric dtype).

    Returns:
      ``(mean float32 [C], std float32 [C])``, to pass to :func:`make_dataset` for
      both the training and the evaluation data.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [N, H, W, C] array, got {images.shape}")
    channels = images.shape[-1]
    total = np.zeros(channels, np.float64)
    total_sq = np.zeros(channels, np.float64)
    for start in range(0, len(images), chunk_size):
        chunk = images[start : start + chunk_size].reshape(-1, channels).astype(np.float64)
        total += chunk.sum(axis=0)
        total_sq += np.square(chunk).sum(axis=0)
    count = images.size // channels
    mean = total / count
    variance = np.maximum(total_sq / count - np.square(mean), 0.0)
    return mean.astype(np.float32), np.sqrt(variance).astype(np.float32)


def normalize(images: tf.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> tf.Tensor:
    """float32 ``(images - mean) / std`` (pixel units); ``images / 255`` if both are None."""
    images = tf.cast(images, tf.float32)
    if mean is None and std is None:
        return images / 255.0
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def validate_stats(mean: Sequence[float] | None, std: Sequence[float] | None, channels: int) -> None:
    """Raises ValueError unless mean/std are both None or finite per-channel values, std > 0."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (e.g. from channel_stats(train_images)), or neither")
    if mean is None:
        return
    for name, value in (("mean", mean), ("std", std)):
        array = np.asarray(value, dtype=np.float64)
        if array.shape not in ((), (channels,)):
            raise ValueError(f"{name} must be a scalar or have {channels} entries, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if np.any(np.asarray(std, dtype=np.float64) <= 0):
        raise ValueError(f"std must be positive, got {std!r}")


def random_crop_and_flip(images: tf.Tensor, seed: tf.Tensor, padding: int = AUGMENT_PADDING) -> tf.Tensor:
    """Per image of a batch: zero-pad by ``padding``, crop back at a random offset, flip half.

    The standard CIFAR augmentation, vectorized over the batch with two gathers.

    Args:
      images: [B, H, W, C] tensor.
      seed: stateless seed, int tensor of shape [2].
      padding: pixels of zero padding on each side.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    span = 2 * padding + 1
    top = tf.random.stateless_uniform([batch], seeds[0], 0, span, dtype=tf.int32)
    left = tf.random.stateless_uniform([batch], seeds[1], 0, span, dtype=tf.int32)
    flip = tf.random.stateless_uniform([batch], seeds[2], 0, 2, dtype=tf.int32) > 0
    rows = top[:, None] + tf.range(height)[None, :]
    cols = left[:, None] + tf.range(width)[None, :]
    cols = tf.where(flip[:, None], tf.reverse(cols, axis=[1]), cols)  # a flip is reversed columns
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def augment_batches(dataset: tf.data.Dataset, augment, seed: int) -> tf.data.Dataset:
    """Applies the named augmentation to each batch's images (first element); ``none`` returns ``dataset``.

    One fresh stateless seed per batch: different every epoch, the same sequence on every run.
    """
    mode = augmentation_mode(augment)
    if mode == "none":
        return dataset
    padding = AUGMENT_PADDING if mode == "crop_flip" else 0  # no padding: the crop is the image, a flip only
    batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip((dataset, batch_seeds)).map(
        lambda batch, s: (random_crop_and_flip(batch[0], tf.stack([s, tf.constant(0, tf.int64)]), padding),)
        + tuple(batch[1:]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def check_dataset_arguments(n: int, channels: int, labels: np.ndarray, batch_size, training: bool, augment: bool,
                            mean, std) -> None:
    """Raises ValueError for arguments of :func:`make_dataset` that do not fit ``n`` images."""
    if n == 0:
        raise ValueError("images is empty")
    if len(labels) != n or labels.ndim not in (1, 2):
        raise ValueError(f"labels must be [N] or [N, K] with N={n}, got {labels.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if augmentation_mode(augment) != "none" and not training:
        raise ValueError("augmentation needs training=True: evaluation data is never augmented")
    validate_stats(mean, std, channels)


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    training: bool,
    augment: bool | str = False,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    cache: bool = True,
    sample_weights: np.ndarray | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """A batched, normalized tf.data pipeline over in-memory images.

    Args:
      images: uint8 [N, H, W, C].
      labels: int [N] class ids or float [N, K] multi-label targets.
      batch_size: examples per batch.
      training: shuffle (seeded, reshuffled every epoch) and allow augmentation.
      augment: ``none``, ``flip`` (horizontal, half the images) or ``crop_flip``
        (random crop with 4-pixel zero padding + flip); ``True``/``False`` mean
        ``crop_flip``/``none``. Off by default since the paper mentions none;
        needs training=True.
      seed: seed of the shuffle and the augmentation.
      mean, std: per-channel statistics in pixel units, normally
        ``channel_stats(train_images)`` for train and test alike. If both are None,
        pixels are only scaled to [0, 1].
      cache: cache the raw examples after the first pass.
      sample_weights: optional float [N] or [N, K] (e.g. the BP4D known-label mask),
        yielded as a third element so Keras uses it as sample weights.
      drop_remainder: drop the last incomplete batch.

    Returns:
      Dataset of ``(images float32 [B, H, W, C], labels)`` or
      ``(images, labels, sample_weights)``.
    """
    if hasattr(images, "make_dataset"):  # images read lazily from disk (BP4D)
        return images.make_dataset(labels, batch_size, training, augment=augment, seed=seed, mean=mean, std=std,
                                   cache=cache, sample_weights=sample_weights, drop_remainder=drop_remainder)
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
    n = len(images)
    check_dataset_arguments(n, images.shape[-1], labels, batch_size, training, augment, mean, std)
    if np.issubdtype(labels.dtype, np.integer):
        labels = labels.astype(np.int64)
    elif np.issubdtype(labels.dtype, np.floating) or labels.dtype == bool:
        labels = labels.astype(np.float32)
    else:
        raise ValueError(f"labels must be integer or float, got {labels.dtype}")
    tensors: tuple[np.ndarray, ...] = (images, labels)
    if sample_weights is not None:
        sample_weights = np.asarray(sample_weights, dtype=np.float32)
        if sample_weights.shape[:1] != (n,) or sample_weights.ndim > 2:
            raise ValueError(f"sample_weights must be [N] or [N, K] with N={n}, got {sample_weights.shape}")
        tensors += (sample_weights,)

    dataset = tf.data.Dataset.from_tensor_slices(tensors)
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = augment_batches(dataset, augment, seed)
    dataset = dataset.map(
        lambda x, *rest: (normalize(x, mean, std), *rest),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
