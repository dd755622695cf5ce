"""Your own images: ``--dataset=folder`` with ``--folder_path`` (or ``TFQ_NOISE_FOLDER_PATH``).

Two layouts (the path is not part of a run's identity, like ``--cifar10_dir``; its
listing goes into the run's info):

* **An image folder**: one sub-folder per class, class ids = the sorted sub-folder names.
  A ``test/`` sub-folder (with the same class sub-folders, or a subset) is the test set,
  and then the classes may sit in a ``train/`` sub-folder or beside ``test/``. Files
  other than ``.png .jpg .jpeg .bmp .gif`` and hidden files are ignored (and counted);
  sub-folders of a class folder are not read. Its labels are the folder names: no clean
  labels, so ``train_corrupted`` marks only synthetic flips.
* **A CSV** (``path,label[,clean_label][,split]`` with that header; ``path`` relative to the CSV's
  folder or absolute): ``label`` is the given (noisy) label, ``clean_label`` the clean one where
  known (then ``train_corrupted`` is real and memorization is measured as for CIFAR-10), ``split``
  is ``train`` or ``test``. Class ids = the sorted training labels (numerically if all are integers).

Test set: the ``test/`` folder or the ``split=test`` rows, scored against ``clean_label``
where given, else against the labels as given. Without either, a fixed per-class share
``test_fraction`` (0.2) of the examples is held out (:func:`tfq_noise.data.base.held_out_test`,
never the run's seed). Validation is then ``validation_fraction`` of the rest, as for CIFAR-10.

Images: decoded with TensorFlow (PNG, JPEG, BMP, GIF's first frame), ``channels`` = 3 (default:
grayscale replicated, alpha dropped) or 1 (converted to grayscale), resized to
``image_size`` × ``image_size`` (32) with an antialiased bilinear filter whatever their aspect
ratio, rounded to uint8 [N, H, W, C] in memory like CIFAR-10.

Errors (ValueError naming the file or CSV line, raised by ``prepare`` before the runner writes
anything): missing path, no class folders, an empty class folder, a file that is not a readable
image, a CSV without ``path``/``label``, an unknown column, an empty cell, a missing image file,
a ``split`` other than train/test, a test label no training example has, fewer than 2 classes.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Sequence

import numpy as np

import tfq_noise  # noqa: F401  (tf_keras before TensorFlow)
import tensorflow as tf

from tfq_noise.data import base
from tfq_noise.data.classification import check_noise, image_options, prepare_arrays

ENV_VAR = "TFQ_NOISE_FOLDER_PATH"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
DEFAULTS = {"image_size": 32, "channels": 3, "test_fraction": 0.2}
CSV_COLUMNS = ("path", "label", "clean_label", "split")


@dataclasses.dataclass
class Listing:
    """Image files and their labels, before decoding."""

    paths: list[str]
    labels: np.ndarray  # int64 ids into class_names: the given labels
    clean: np.ndarray | None  # int64 clean labels, where given
    test: np.ndarray | None  # bool [N]: the file belongs to the test set; None: no test split given
    class_names: list[str]
    layout: str  # 'folder' or 'csv'
    ignored_files: int = 0


def resolve(path: str | None) -> str:
    path = path or os.environ.get(ENV_VAR)
    if not path:
        raise ValueError(f"--dataset=folder needs --folder_path (an image folder or a CSV), or {ENV_VAR}")
    if not os.path.exists(path):
        raise ValueError(f"folder dataset: {path} does not exist")
    return path


def _subfolders(directory: str) -> list[str]:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def _images(directory: str) -> tuple[list[str], int]:
    files = sorted(e.name for e in os.scandir(directory) if e.is_file() and not e.name.startswith("."))
    images = [os.path.join(directory, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return images, len(files) - len(images)


def list_folder(root: str) -> Listing:
    folders = _subfolders(root)
    train_root = os.path.join(root, "train") if "train" in folders else root
    classes = [c for c in _subfolders(train_root) if train_root != root or c not in ("train", "test")]
    if not classes:
        raise ValueError(f"folder dataset: {train_root} has no class sub-folders (one folder of images per class)")
    paths, labels, test, ignored = [], [], [], 0
    for split_root, is_test in ((train_root, False), (os.path.join(root, "test"), True)):
        if is_test and "test" not in folders:
            break
        names = _subfolders(split_root) if is_test else classes
        if is_test and not names:
            raise ValueError(f"folder dataset: {split_root} has no class sub-folders")
        for name in names:
            if name not in classes:
                raise ValueError(f"folder dataset: {os.path.join(split_root, name)}: unknown label {name!r}, not "
                                 f"a training class {classes}")
            files, skipped = _images(os.path.join(split_root, name))
            ignored += skipped
            if not files:
                raise ValueError(f"folder dataset: class folder {os.path.join(split_root, name)} holds no images "
                                 f"({' '.join(IMAGE_EXTENSIONS)})")
            paths += files
            labels += [classes.index(name)] * len(files)
            test += [is_test] * len(files)
    return Listing(paths=paths, labels=np.asarray(labels, np.int64), clean=None,
                   test=np.asarray(test, bool) if "test" in folders else None, class_names=classes,
                   layout="folder", ignored_files=ignored)


def _class_order(names) -> list[str]:
    names = set(names)
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def list_csv(path: str) -> Listing:
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in columns or "label" not in columns:
            raise ValueError(f"{path}: the header must name the columns path,label[,clean_label][,split]; got "
                             f"{columns}")
        unknown = [c for c in columns if c not in CSV_COLUMNS]
        if unknown:
            raise ValueError(f"{path}: unknown column(s) {unknown}; known: {list(CSV_COLUMNS)}")
        reader.fieldnames = columns
        rows = []
        for row in reader:
            line = reader.line_num
            values = {k: (row.get(k) or "").strip() for k in columns}
            for key in columns:
                if not values[key]:
                    raise ValueError(f"{path} line {line}: empty {key}")
            split = values.get("split", "train").lower()
            if split not in ("train", "test"):
                raise ValueError(f"{path} line {line}: split must be train or test, got {values['split']!r}")
            file = values["path"] if os.path.isabs(values["path"]) else os.path.join(folder, values["path"])
            if not os.path.isfile(file):
                raise ValueError(f"{path} line {line}: image file {file} not found")
            rows.append((line, file, values["label"], values.get("clean_label"), split == "test"))
    if not rows:
        raise ValueError(f"{path}: no rows")
    train_names = {r[2] for r in rows if not r[4]} | {r[3] for r in rows if not r[4] and r[3] is not None}
    classes = _class_order(train_names)
    ids = {name: i for i, name in enumerate(classes)}
    for line, _, label, clean, is_test in rows:
        for name in (label, clean):
            if name is not None and name not in ids:
                raise ValueError(f"{path} line {line}: unknown label {name!r}: no training row has it "
                                 f"(training labels: {classes})")
    has_clean = "clean_label" in columns
    return Listing(
        paths=[r[1] for r in rows],
        labels=np.asarray([ids[r[2]] for r in rows], np.int64),
        clean=np.asarray([ids[r[3]] for r in rows], np.int64) if has_clean else None,
        test=np.asarray([r[4] for r in rows], bool) if "split" in columns else None,
        class_names=classes, layout="csv",
    )


def decode_image(path: str, image_size: int, channels: int) -> np.ndarray:
    """uint8 [image_size, image_size, channels]; ValueError naming ``path`` if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        image = tf.io.decode_image(raw, channels=0, expand_animations=False, dtype=tf.uint8)
    except (OSError, tf.errors.InvalidArgumentError, ValueError) as error:
        message = getattr(error, "message", None) or str(error)
        raise ValueError(f"folder dataset: {path} is not a readable image: {message.splitlines()[0]}") from None
    have = int(image.shape[-1])
    if have in (2, 4):  # drop the alpha channel
        image = image[..., :have - 1]
        have -= 1
    if channels == 3 and have == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif channels == 1 and have == 3:
        image = tf.image.rgb_to_grayscale(image)
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8).numpy()


def decode_images(paths: Sequence[str], image_size: int, channels: int) -> np.ndarray:
    out = np.empty((len(paths), image_size, image_size, channels), np.uint8)
    for i, path in enumerate(paths):
        out[i] = decode_image(path, image_size, channels)
    return out


def prepare(config, paths: base.DataPaths) -> base.RunData:
    """The folder or CSV at ``paths.folder_path`` (see the module docstring)."""
    check_noise(config)
    values = base.options(config, DEFAULTS)
    size, channels, test_fraction = image_options(values, 1)
    source = resolve(paths.folder_path)
    listing = list_csv(source) if os.path.isfile(source) else list_folder(source)
    images = decode_images(listing.paths, size, channels)
    test = listing.test if listing.test is not None else base.held_out_test(
        listing.labels if listing.clean is None else listing.clean, test_fraction)
    train = ~test
    if not train.any():
        raise ValueError(f"folder dataset {source}: no training images")
    if not test.any():
        raise ValueError(f"folder dataset {source}: no test images (add a test/ folder, split=test rows, or "
                         "more images per class)")
    reference = listing.labels if listing.clean is None else listing.clean
    info = {
        "source": f"{listing.layout} {os.path.abspath(source)}",
        "image_size": size,
        "channels": channels,
        "test_split": "given" if listing.test is not None else f"held out: {test_fraction:g} of each class",
        "ignored_files": listing.ignored_files,
    }
    return prepare_arrays(
        config, images[train], listing.labels[train], None if listing.clean is None else listing.clean[train],
        images[test], reference[test], listing.class_names, info)
