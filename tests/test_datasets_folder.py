"""Your own images (``--dataset=folder``: a class-per-folder tree or a CSV) and TFDS (``tfds:NAME``,
through a mocked ``tfds.load``: there is no internet here), built from tiny PNGs in tmp_path."""

from __future__ import annotations

import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from tfq_noise.config import RunConfig
from tfq_noise.data import PREPARERS, DataPaths, noise_types, prepare
from tfq_noise.data.base import held_out_test


def write_png(path: Path, height: int = 6, width: int = 5, channels: int = 3, value: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8) if value is None else \
        np.full((height, width, channels), value, np.uint8)
    path.write_bytes(tf.io.encode_png(pixels).numpy())


def make_folder(root: Path, classes=("cat", "dog", "ant"), per_class: int = 5) -> Path:
    for c in classes:
        for i in range(per_class):
            channels = (1, 3, 4)[i % 3]  # grayscale, RGB and RGBA mixed
            write_png(root / c / f"{c}{i}.png", height=4 + i, width=6, channels=channels)
    return root


def config(**kwargs) -> RunConfig:
    base = dict(dataset="folder", noise_type="original", noise_rate=0.0, validation_fraction=0.2,
                dataset_kwargs={"image_size": 8})
    return RunConfig(**{**base, **kwargs})


def test_folder_layout_classes_sizes_and_held_out_test(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "cat" / "notes.txt").write_text("not an image: ignored")
    data = prepare(config(), DataPaths(folder_path=str(root)))
    assert data.info["classes"] == ["ant", "cat", "dog"]  # sorted folder names → ids 0, 1, 2
    assert data.train_images.dtype == np.uint8 and data.input_shape == (8, 8, 3)
    # 1 of each class's 5 images is held out (floor(0.2 * 5 + 0.5)), 2 of the other 12 validate.
    assert len(data.test_images) == 3 and sorted(data.test_labels) == [0, 1, 2]
    assert len(data.train_images) == 10 and len(data.val_images) == 2
    assert not data.train_corrupted.any() and np.array_equal(data.train_labels, data.train_clean_labels)
    assert data.info["clean_labels_given"] is False and "no clean labels" in data.info["caveat"]
    assert data.info["ignored_files"] == 1 and data.info["test_split"].startswith("held out")
    assert data.mean.shape == (3,) and data.task.num_classes == 3
    again = prepare(config(seed=5, method="quantization"), DataPaths(folder_path=str(root)))
    assert np.array_equal(again.test_images, data.test_images)  # the split never depends on the seed
    assert np.array_equal(again.train_images, data.train_images)


def test_grayscale_is_replicated_or_kept_and_resized(tmp_path):
    root = tmp_path / "data"
    for c in ("a", "b"):
        write_png(root / c / "gray.png", 3, 7, channels=1, value=100)
        write_png(root / c / "rgba.png", 9, 9, channels=4, value=200)
    data = prepare(config(validation_fraction=0.0, dataset_kwargs={"image_size": 4, "test_fraction": 0.5}),
                   DataPaths(folder_path=str(root)))
    images = np.concatenate([data.train_images, data.test_images])
    assert images.shape == (4, 4, 4, 3)
    assert set(np.unique(images)) == {100, 200}  # flat images stay flat through the resize; alpha dropped
    gray = prepare(config(validation_fraction=0.0, dataset_kwargs={"image_size": 5, "channels": 1,
                                                                   "test_fraction": 0.5}),
                   DataPaths(folder_path=str(root)))
    assert gray.input_shape == (5, 5, 1)


def test_train_and_test_folders(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "train", ("x", "y"), 3)
    make_folder(root / "test", ("y",), 2)
    data = prepare(config(validation_fraction=0.0), DataPaths(folder_path=str(root)))
    assert data.info["classes"] == ["x", "y"] and data.info["test_split"] == "given"
    assert len(data.train_images) == 6 and list(data.test_labels) == [1, 1]
    # The classes may also sit beside test/.
    other = tmp_path / "other"
    make_folder(other, ("x", "y"), 2)
    make_folder(other / "test", ("x",), 1)
    data = prepare(config(validation_fraction=0.0), DataPaths(folder_path=str(other)))
    assert data.info["classes"] == ["x", "y"] and len(data.train_images) == 4 and list(data.test_labels) == [0]


def write_csv(tmp_path: Path, rows, header="path,label,clean_label,split") -> Path:
    for row in rows:
        write_png(tmp_path / "img" / row.split(",")[0].split("/")[-1])
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_csv_with_clean_labels_makes_corruption_real_and_adds_synthetic_noise(tmp_path):
    rows = []
    for i in range(40):
        clean = ("2", "10")[i % 2]  # integer labels sort numerically: 2 → 0, 10 → 1
        given = clean if i % 4 else ("10" if clean == "2" else "2")  # every 4th label is wrong
        rows.append(f"img/{i}.png,{given},{clean},{'test' if i >= 32 else 'train'}")
    path = write_csv(tmp_path, rows)
    data = prepare(config(validation_fraction=0.0), DataPaths(folder_path=str(path)))
    assert data.info["classes"] == ["2", "10"] and len(data.train_images) == 32 and len(data.test_images) == 8
    assert data.info["clean_labels_given"] and data.info["caveat"] is None
    assert data.train_corrupted.sum() == 8 and data.info["given_noise_rate"] == 0.25
    assert np.array_equal(data.train_corrupted, data.train_labels != data.train_clean_labels)
    assert np.array_equal(data.test_labels, np.arange(32, 40) % 2)  # the test set is scored on the clean labels
    noisy = prepare(config(validation_fraction=0.0, noise_type="symmetric", noise_rate=0.5),
                    DataPaths(folder_path=str(path)))
    assert np.array_equal(noisy.train_clean_labels, data.train_clean_labels)
    assert np.array_equal(noisy.train_corrupted, noisy.train_labels != noisy.train_clean_labels)
    assert 0 < noisy.info["realized_flip_rate"] < 0.5  # synthetic flips of the given labels


def test_csv_without_clean_labels_or_split(tmp_path):
    rows = [f"img/{i}.png,{'cat' if i % 2 else 'dog'}" for i in range(10)]
    path = write_csv(tmp_path, rows, header="path,label")
    data = prepare(config(validation_fraction=0.0), DataPaths(folder_path=str(path)))
    assert data.info["classes"] == ["cat", "dog"] and len(data.test_images) == 2  # 0.2 of each class
    assert not data.train_corrupted.any()


def test_held_out_test_is_a_fixed_share_of_each_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    test = held_out_test(labels, 0.2)
    assert [test[labels == c].sum() for c in range(3)] == [2, 1, 0]
    assert np.array_equal(test, held_out_test(labels, 0.2))


def expect_error(tmp_path, path, match, **kwargs):
    with pytest.raises(ValueError, match=match):
        prepare(config(**kwargs), DataPaths(folder_path=str(path)))


def test_folder_errors_name_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("TFQ_NOISE_FOLDER_PATH", raising=False)
    with pytest.raises(ValueError, match="needs --folder_path"):
        prepare(config(), DataPaths())
    expect_error(tmp_path, tmp_path / "nowhere", "nowhere does not exist")
    (tmp_path / "flat").mkdir()
    write_png(tmp_path / "flat" / "a.png")
    expect_error(tmp_path, tmp_path / "flat", "has no class sub-folders")
    empty = make_folder(tmp_path / "empty", ("a", "b"), 2)
    (empty / "c").mkdir()
    (empty / "c" / "readme.txt").write_text("x")
    expect_error(tmp_path, empty, r"class folder .*empty/c holds no images")
    bad = make_folder(tmp_path / "bad", ("a", "b"), 2)
    (bad / "b" / "broken.png").write_bytes(b"not a png")
    expect_error(tmp_path, bad, r"bad/b/broken.png is not a readable image")
    unknown = make_folder(tmp_path / "unknown", ("a", "b"), 2)
    make_folder(unknown / "test", ("a", "zebra"), 1)
    expect_error(tmp_path, unknown, r"test/zebra: unknown label 'zebra'")
    one = make_folder(tmp_path / "one", ("a",), 4)
    expect_error(tmp_path, one, "at least 2 classes")
    expect_error(tmp_path, make_folder(tmp_path / "few", ("a", "b"), 2), "no test images")  # 0.2 of 2 is 0
    expect_error(tmp_path, make_folder(tmp_path / "ok", ("a", "b"), 5), "unknown dataset_kwargs",
                 dataset_kwargs={"size": 8})
    expect_error(tmp_path, tmp_path / "ok", "noise_type must be one of", noise_type="pair", noise_rate=0.2)


@pytest.mark.parametrize("header, rows, match", [
    ("path,labels", ["img/0.png,a"], "header must name the columns path,label"),
    ("path,label,weight", ["img/0.png,a,1"], r"unknown column\(s\) \['weight'\]"),
    ("path,label", ["img/0.png,a", "img/1.png,"], "line 3: empty label"),
    ("path,label", ["img/0.png,a", "missing.png,b"], r"line 3: image file .*missing.png not found"),
    ("path,label,split", ["img/0.png,a,train", "img/1.png,b,valid"], "line 3: split must be train or test"),
    ("path,label,split", ["img/0.png,a,train", "img/1.png,b,train", "img/2.png,c,test"],
     "line 4: unknown label 'c'"),
    ("path,label", [], "no rows"),
])
def test_csv_errors_name_the_line(tmp_path, header, rows, match):
    for i in range(3):
        write_png(tmp_path / "img" / f"{i}.png")
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    expect_error(tmp_path, path, match)


def test_bad_image_in_a_csv(tmp_path):
    write_png(tmp_path / "0.png")
    (tmp_path / "1.png").write_text("broken")
    path = tmp_path / "labels.csv"
    path.write_text("path,label\n0.png,a\n1.png,b\n")
    expect_error(tmp_path, path, r"1.png is not a readable image")


def test_runner_checks_folder_data_before_writing_anything(tmp_path, capsys):
    from absl import flags

    from experiments import run

    root = make_folder(tmp_path / "data", ("a", "b"), 2)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG broken")
    results = tmp_path / "results"
    args = ["run", "--dataset=folder", f"--folder_path={root}", "--noise_type=original", "--methods=baseline",
            f"--results_dir={results}", "--epochs=1", "--dataset_kwargs=image_size=8", "--report=false"]
    flags.FLAGS.unparse_flags()
    flags.FLAGS(args)
    try:
        code = run.main(["run"])
        assert code == 2 and not results.exists()
        assert "broken.png is not a readable image" in capsys.readouterr().err
        flags.FLAGS.unparse_flags()
        flags.FLAGS([*args, "--noise_type=pair"])
        assert run.main(["run"]) == 2 and "not a noise type of folder" in capsys.readouterr().err
        flags.FLAGS.unparse_flags()
        flags.FLAGS([*args[:1], "--dataset=imagenet_folder", *args[2:]])
        assert run.main(["run"]) == 2 and "unknown dataset 'imagenet_folder'" in capsys.readouterr().err
    finally:
        flags.FLAGS.unparse_flags()
    assert "folder" in PREPARERS and "symmetric" in noise_types("folder") and "tfds:NAME" in run.help_text()


# --------------------------------------------------------------------- TFDS (mocked: no internet here)


def fake_tfds_load(splits, names):
    calls = []

    def load(name, **kwargs):
        calls.append((name, kwargs))
        info = types.SimpleNamespace(features={"label": types.SimpleNamespace(names=names, num_classes=len(names))})
        return {k: (tf.constant(x), tf.constant(y)) for k, (x, y) in splits.items()}, info

    return load, calls


def tiny_split(n, classes, height=6, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, height, height, channels), np.uint8), np.arange(n) % classes


def test_tfds_dataset_with_test_split_and_synthetic_noise(tmp_path):
    import tensorflow_datasets as tfds

    load, calls = fake_tfds_load({"train": tiny_split(50, 5), "test": tiny_split(10, 5, seed=1)},
                                 [f"c{i}" for i in range(5)])
    with mock.patch.object(tfds, "load", load):
        data = prepare(RunConfig(dataset="tfds:tiny", noise_type="symmetric", noise_rate=0.6, seed=1,
                                 validation_fraction=0.2, dataset_kwargs={"channels": 3, "image_size": 4}),
                       DataPaths(tfds_data_dir=str(tmp_path)))
    assert calls[0][0] == "tiny" and calls[0][1]["data_dir"] == str(tmp_path)
    assert calls[0][1]["as_supervised"] and calls[0][1]["batch_size"] == -1 and calls[0][1]["download"] is True
    assert data.input_shape == (4, 4, 3) and len(data.train_images) == 40 and len(data.val_images) == 10
    assert len(data.test_images) == 10 and data.task.num_classes == 5 and data.info["classes"][0] == "c0"
    assert data.train_corrupted.any()  # the labels of TFDS are taken as clean: synthetic flips are real
    assert np.array_equal(data.train_corrupted, data.train_labels != data.train_clean_labels)


def test_tfds_without_test_split_holds_out_a_share_and_keeps_native_images(tmp_path):
    import tensorflow_datasets as tfds

    load, _ = fake_tfds_load({"train": tiny_split(20, 2)}, ["a", "b"])
    with mock.patch.object(tfds, "load", load):
        data = prepare(RunConfig(dataset="tfds:tiny", noise_type="original", validation_fraction=0.0), DataPaths())
        with pytest.raises(ValueError, match="has no split 'training'"):
            prepare(RunConfig(dataset="tfds:tiny", noise_type="original",
                              dataset_kwargs={"train_split": "training"}), DataPaths())
    assert data.input_shape == (6, 6, 1) and len(data.test_images) == 4 and not data.train_corrupted.any()

    def failing(name, **kwargs):
        raise FileNotFoundError("no such dataset here")

    with mock.patch.object(tfds, "load", failing), pytest.raises(ValueError, match="tfds:nothing: cannot load it"):
        prepare(RunConfig(dataset="tfds:nothing", noise_type="original", dataset_kwargs={"download": False}),
                DataPaths())
    with pytest.raises(ValueError, match="tfds:NAME"):
        prepare(RunConfig(dataset="tfds:", noise_type="original"), DataPaths())
