"""CIFAR-10 loader: binary layout, official order, errors, caveat, TFDS conversion."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tfq_noise  # noqa: F401
import tensorflow as tf

from tfq_noise.data import cifar10

RECORD = cifar10.RECORD_BYTES


def test_binary_copy_shapes_order_and_caveat(cifar10_data, cifar10_dir, official_order_labels):
    data = cifar10_data
    for split, n in ((data.train, 50_000), (data.test, 10_000)):
        assert split.images.shape == (n, 32, 32, 3) and split.images.dtype == np.uint8
        assert split.labels.dtype == np.int64 and split.index.dtype == np.int64
        np.testing.assert_array_equal(split.index, np.arange(n))
    np.testing.assert_array_equal(data.train.labels, official_order_labels["train"])
    np.testing.assert_array_equal(data.test.labels, official_order_labels["test"])
    assert data.source == os.path.abspath(os.path.join(cifar10_dir, cifar10.BINARY_FOLDER))
    # The offline copy is decoded from JPEG, and the loader must say so.
    assert data.caveat is not None and "JPEG" in data.caveat
    assert cifar10.jpeg_grid_score(data.test.images[:2000]) < 0.5
    assert cifar10.CLASS_NAMES[data.train.labels[0]] == "frog" and cifar10.NUM_CLASSES == 10


def test_record_layout_is_label_then_rgb_planes(tmp_path):
    rng = np.random.default_rng(0)
    records = rng.integers(0, 256, size=(10_000, RECORD), dtype=np.uint8)
    records[:, 0] = rng.integers(0, 10, size=10_000)
    path = tmp_path / "data_batch_1.bin"
    records.tofile(path)
    images, labels = cifar10.read_batch_file(str(path))
    np.testing.assert_array_equal(labels, records[:, 0])
    i, y, x = 1234, 5, 17
    for channel in range(3):
        assert images[i, y, x, channel] == records[i, 1 + channel * 1024 + y * 32 + x]


def test_smooth_images_are_not_flagged_and_their_jpegs_are():
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(300, 8, 8, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (32, 32), method="bicubic").numpy() * 40 + 128
    images = np.clip(smooth + rng.normal(0, 5, smooth.shape), 0, 255).astype(np.uint8)
    assert cifar10.jpeg_grid_score(images) == pytest.approx(1.0, abs=0.1)
    assert cifar10.binary_copy_caveat(images) is None
    jpegs = np.stack([tf.io.decode_jpeg(tf.io.encode_jpeg(im, quality=90)).numpy() for im in images])
    assert "JPEG" in cifar10.binary_copy_caveat(jpegs)


def test_folder_itself_and_env_var_resolution(cifar10_dir, monkeypatch):
    folder = os.path.join(cifar10_dir, cifar10.BINARY_FOLDER)
    assert cifar10.resolve_binary_dir(str(cifar10_dir)) == folder
    assert cifar10.resolve_binary_dir(folder) == folder
    calls = []
    monkeypatch.setattr(cifar10, "load_binary", lambda d: calls.append(("binary", d)))
    monkeypatch.setattr(cifar10, "load_tfds", lambda d: calls.append(("tfds", d)))
    monkeypatch.setenv(cifar10.ENV_VAR, "/from/env")
    cifar10.load("/from/arg")
    cifar10.load()
    monkeypatch.setenv(cifar10.ENV_VAR, "")
    cifar10.load(tfds_data_dir="/tfds")
    assert calls == [("binary", "/from/arg"), ("binary", "/from/env"), ("tfds", "/tfds")]
    with pytest.raises(ValueError, match="not both"):
        cifar10.load("/a", tfds_data_dir="/b")


def _batch_dir(tmp_path):
    folder = tmp_path / cifar10.BINARY_FOLDER
    folder.mkdir()
    return folder


def test_missing_directory_and_batch_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cifar10.load(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="neither"):
        cifar10.load(str(tmp_path))
    folder = _batch_dir(tmp_path)
    (folder / cifar10.TEST_FILE).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin"):
        cifar10.load(str(tmp_path))


def test_truncated_and_oversized_batch_files(tmp_path):
    folder = _batch_dir(tmp_path)
    path = folder / "data_batch_1.bin"
    path.write_bytes(bytes(RECORD * 9_999))
    with pytest.raises(ValueError, match="truncated: 30726927 bytes, expected 30730000"):
        cifar10.load(str(tmp_path))
    path.write_bytes(bytes(RECORD * 10_000 + 1))
    with pytest.raises(ValueError, match="too large"):
        cifar10.read_batch_file(str(path))


def test_label_byte_above_nine(tmp_path):
    records = np.zeros((10_000, RECORD), np.uint8)
    records[42, 0] = 10
    path = tmp_path / "data_batch_1.bin"
    records.tofile(path)
    with pytest.raises(ValueError, match="label byte 10 > 9 in record 42"):
        cifar10.read_batch_file(str(path))


def _fake_tfds_split(split: cifar10.Split, name: str, seed: int):
    """A split as TFDS serves it: shuffled, with 'train_00042'-style ids."""
    order = np.random.default_rng(seed).permutation(len(split))
    ids = np.array([f"{name}_{i:05d}".encode() for i in split.index[order]])
    return {"id": ids, "image": split.images[order], "label": split.labels[order]}


def test_tfds_examples_sorted_into_official_order():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(50, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=50)
    truth = cifar10.Split(images=images, labels=labels.astype(np.int64), index=np.arange(50))
    fake = _fake_tfds_split(truth, "test", seed=2)
    split = cifar10.split_from_tfds_examples(fake["id"], fake["image"], fake["label"], "test")
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)
    np.testing.assert_array_equal(split.index, np.arange(50))
    with pytest.raises(ValueError, match="exactly once"):
        cifar10.split_from_tfds_examples(fake["id"][:-1], fake["image"][:-1], fake["label"][:-1], "test")
    with pytest.raises(ValueError, match="expected 'train_NNNNN'"):
        cifar10.split_from_tfds_examples(fake["id"], fake["image"], fake["label"], "train")


def test_tfds_path_gives_the_binary_arrays(cifar10_data, monkeypatch):
    import tensorflow_datasets as tfds

    served = [_fake_tfds_split(cifar10_data.train, "train", 3), _fake_tfds_split(cifar10_data.test, "test", 4)]

    def fake_load(name, split, data_dir, batch_size):
        assert name == "cifar10" and split == ["train", "test"] and batch_size == -1
        return [{k: tf.constant(v) for k, v in s.items()} for s in served]

    monkeypatch.setattr(tfds, "load", fake_load)
    monkeypatch.setattr(cifar10, "download_host_problem", lambda *a, **k: None)  # as if online
    data = cifar10.load_tfds("/tfds")
    assert data.source == "tfds" and data.caveat is None
    for ours, theirs in ((data.train, cifar10_data.train), (data.test, cifar10_data.test)):
        np.testing.assert_array_equal(ours.images, theirs.images)
        np.testing.assert_array_equal(ours.labels, theirs.labels)
        np.testing.assert_array_equal(ours.index, theirs.index)

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(RuntimeError, match=cifar10.ENV_VAR):
        cifar10.load_tfds(None)


def test_test_size_keeps_one_fixed_subset_of_the_test_set(cifar10_data, cifar10_dir):
    from unittest import mock

    from tfq_noise import data as datasets
    from tfq_noise.config import RunConfig

    paths = datasets.DataPaths(cifar10_dir=str(cifar10_dir))
    with mock.patch.object(datasets.cifar10, "load", lambda *args, **kwargs: cifar10_data):
        full = datasets.prepare(RunConfig(train_size=100), paths)
        small = datasets.prepare(RunConfig(train_size=100, test_size=500, seed=3), paths)
        again = datasets.prepare(RunConfig(train_size=100, test_size=500, method="quantization"), paths)
        with pytest.raises(ValueError, match="test_size=20000 exceeds the 10000 test examples"):
            datasets.prepare(RunConfig(train_size=100, test_size=20000), paths)
    assert len(full.test_images) == 10000 and len(small.test_images) == 500
    assert small.info["test_examples"] == 500 and small.info["test_subset_of"] == 10000
    assert np.array_equal(small.test_images, again.test_images)  # the same subset whatever the seed or method
    rows = {full.test_images[i].tobytes(): full.test_labels[i] for i in range(10000)}
    assert all(rows[image.tobytes()] == label for image, label in zip(small.test_images, small.test_labels))
    with pytest.raises(ValueError, match="test_size"):
        RunConfig(test_size=-1)
