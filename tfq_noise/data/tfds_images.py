"""TFDS image classification: ``--dataset=tfds:NAME`` (e.g. ``tfds:mnist``, ``tfds:fashion_mnist``),
read with ``tfds.load(NAME, data_dir=--tfds_data_dir, as_supervised=True, batch_size=-1)``.

Labels are the dataset's own, taken as clean: ``noise_type='symmetric'`` or ``'symmetric_exclusive'``
with a rate adds synthetic noise (then ``train_corrupted`` is real), ``'original'`` trains on them
as they are (:mod:`tfq_noise.data.classification`). Splits: ``train`` (``train_split``) for training
and validation; the test set is the ``test`` split (``test_split``) where the dataset has one, else
a fixed per-class share ``test_fraction`` (0.2) of the training split. ``dataset_kwargs``:
``image_size`` (0: as stored, which must then be one size; else resized to a square, antialiased),
``channels`` (0: as stored; 1 or 3 converts), ``train_split``, ``test_split``, ``test_fraction``,
``download`` (true: TFDS downloads a dataset it does not find in ``data_dir``, which needs the
internet; false: fail at once). Errors name the dataset (``ValueError``).
"""

from __future__ import annotations

import numpy as np

import tfq_noise  # noqa: F401  (tf_keras before TensorFlow)
import tensorflow as tf

from tfq_noise.data import base
from tfq_noise.data.classification import check_noise, image_options, prepare_arrays

PREFIX = "tfds:"
DEFAULTS = {"image_size": 0, "channels": 0, "train_split": "train", "test_split": "test", "test_fraction": 0.2,
            "download": True}


def dataset_name(dataset: str) -> str:
    name = dataset[len(PREFIX):] if dataset.startswith(PREFIX) else ""
    if not name:
        raise ValueError(f"a TFDS dataset is named tfds:NAME (e.g. tfds:mnist), got {dataset!r}")
    return name


def _images(images, name: str, size: int, channels: int) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"tfds:{name}: expected uint8 images [N, H, W, C], got {images.dtype} {images.shape}")
    if channels and images.shape[-1] != channels:
        if images.shape[-1] in (2, 4):
            images = images[..., :-1]
        if channels == 3 and images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        elif channels == 1 and images.shape[-1] == 3:
            images = tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(images, tf.float32))), tf.uint8).numpy()
    if size and images.shape[1:3] != (size, size):
        out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
        for start in range(0, len(images), 1024):
            batch = tf.image.resize(images[start:start + 1024], (size, size), antialias=True)
            out[start:start + 1024] = tf.cast(tf.clip_by_value(tf.round(batch), 0.0, 255.0), tf.uint8).numpy()
        images = out
    return images


def prepare(config, paths: base.DataPaths) -> base.RunData:
    import tensorflow_datasets as tfds

    name = dataset_name(config.dataset)
    check_noise(config)
    values = base.options(config, DEFAULTS)
    size, channels, test_fraction = image_options(values, 0)
    if not isinstance(values["download"], bool):
        raise ValueError(f"dataset_kwargs download must be true or false, got {values['download']!r}")
    try:
        splits, info = tfds.load(name, data_dir=paths.tfds_data_dir, split=None, as_supervised=True,
                                 batch_size=-1, with_info=True, download=values["download"])
    except Exception as error:  # noqa: BLE001  (TFDS raises many kinds; name the dataset)
        raise ValueError(f"tfds:{name}: cannot load it (data_dir={paths.tfds_data_dir}): "
                         f"{type(error).__name__}: {error}") from None
    keys = getattr(info, "supervised_keys", None)
    label_key = keys[1] if isinstance(keys, (tuple, list)) and len(keys) == 2 and isinstance(keys[1], str) else "label"
    label = info.features[label_key] if label_key in info.features else None
    names = list(getattr(label, "names", None) or range(int(getattr(label, "num_classes", 0) or 0)))
    train_split, test_split = values["train_split"], values["test_split"]
    if train_split not in splits:
        raise ValueError(f"tfds:{name} has no split {train_split!r}; it has {sorted(splits)}")
    images, labels = splits[train_split]
    images, labels = _images(images, name, size, channels), np.asarray(labels).astype(np.int64)
    if not names:
        names = [str(i) for i in range(int(labels.max()) + 1)]
    if test_split in splits:
        test_images, test_labels = splits[test_split]
        test_images, test_labels = _images(test_images, name, size, channels), np.asarray(test_labels, np.int64)
        rule = f"the {test_split!r} split"
    else:
        held = base.held_out_test(labels, test_fraction)
        test_images, test_labels = images[held], labels[held]
        images, labels = images[~held], labels[~held]
        rule = f"held out: {test_fraction:g} of each class of {train_split!r}"
    for split, values_ in ((train_split, labels), (rule, test_labels)):
        if len(values_) and (values_.min() < 0 or values_.max() >= len(names)):
            raise ValueError(f"tfds:{name} ({split}): labels outside 0..{len(names) - 1}")
    info_out = {"source": f"tfds:{name} (data_dir={paths.tfds_data_dir})", "test_split": rule,
                "image_size": size or list(images.shape[1:3]), "channels": int(images.shape[-1]),
                "caveat": None}
    return prepare_arrays(config, images, labels, None, test_images, test_labels,
                          [str(n) for n in names], info_out)
