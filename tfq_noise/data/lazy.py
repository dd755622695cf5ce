"""Image files read on demand (BP4D's frames): :class:`LazyImages`, which
:func:`tfq_noise.data.pipeline.make_dataset` hands the pipeline to."""

from __future__ import annotations

from typing import Sequence

import numpy as np

import tfq_noise  # noqa: F401  (tf_keras before TensorFlow)
import tensorflow as tf

from tfq_noise.data import pipeline


def _decoder(image_size: tuple[int, int], channels: int):
    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        image = tf.image.resize(image, image_size, antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    return decode


class LazyImages:
    """Image files read on demand, standing in for a uint8 [N, H, W, C] array in :class:`RunData`.

    It has what the training loop asks of an image array: ``len``, ``shape``,
    ``dtype``, indexing by an index array (a subset, still lazy), and
    :meth:`make_dataset` with :func:`tfq_noise.data.pipeline.make_dataset`'s
    signature, which that function must dispatch to (see the module's notes).
    Frames are decoded, resized (antialiased) and rounded to uint8, so
    :meth:`load` (all in memory) gives bit-identical pixels.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: Sequence[str], image_size: tuple[int, int], channels: int = 3):
        self.paths = np.asarray(paths, dtype=str)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = int(channels)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), *self.image_size, self.channels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self._decode_paths(self.paths[[index]])[0]
        return LazyImages(self.paths[index], self.image_size, self.channels)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"{len(self)} images are read lazily from files: tfq_noise.data.pipeline.make_dataset must hand "
            "them to LazyImages.make_dataset (see tfq_noise.data.lazy), or call .load() for an array "
            "(dataset_kwargs in_memory=true)"
        )

    def _decode_paths(self, paths) -> np.ndarray:
        decode = _decoder(self.image_size, self.channels)
        dataset = tf.data.Dataset.from_tensor_slices(np.asarray(paths, str)).map(
            decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
        out = np.empty((len(paths), *self.image_size, self.channels), np.uint8)
        position = 0
        for batch in dataset:
            out[position:position + len(batch)] = batch.numpy()
            position += len(batch)
        return out

    def load(self) -> np.ndarray:
        """Every image decoded: uint8 [N, H, W, C]."""
        return self._decode_paths(self.paths)

    def make_dataset(self, labels, batch_size: int, training: bool, augment=False, seed: int = 0,
                     mean=None, std=None, cache: bool = True, sample_weights=None, drop_remainder: bool = False):
        """Like :func:`pipeline.make_dataset`, decoding files in the pipeline (``cache`` is ignored)."""
        del cache  # a BP4D training set does not fit in memory
        labels = np.asarray(labels)
        n = len(self)
        pipeline.check_dataset_arguments(n, self.channels, labels, batch_size, training, augment, mean, std)
        labels = labels.astype(np.int64) if np.issubdtype(labels.dtype, np.integer) else labels.astype(np.float32)
        tensors: tuple = (self.paths, labels)
        if sample_weights is not None:
            sample_weights = np.asarray(sample_weights, np.float32)
            if sample_weights.shape[:1] != (n,) or sample_weights.ndim > 2:
                raise ValueError(f"sample_weights must be [N] or [N, K] with N={n}, got {sample_weights.shape}")
            tensors += (sample_weights,)
        dataset = tf.data.Dataset.from_tensor_slices(tensors)
        if training:
            dataset = dataset.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        decode = _decoder(self.image_size, self.channels)
        dataset = dataset.map(lambda path, *rest: (decode(path), *rest),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        dataset = pipeline.augment_batches(dataset, augment, seed)
        dataset = dataset.map(lambda x, *rest: (pipeline.normalize(x, mean, std), *rest),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.prefetch(tf.data.AUTOTUNE)
