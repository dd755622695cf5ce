"""Multi-task detectors (per-task BatchNorm heads), FER+ / BP4D preparers, per-task F1, Table 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tfq_noise  # noqa: F401  (must precede TensorFlow)
import tensorflow as tf

from tfq_noise import keras, methods, results
from tfq_noise.config import RunConfig
from tfq_noise.data import bp4d, ferplus, pipeline
from tfq_noise.data import PREPARERS, DataPaths, prepare
from tfq_noise.models import MODELS, build_model
from tfq_noise.models.multitask import TASK_SETS, head_layer_bits, head_layer_names, task_names
from tfq_noise.data.bp4d import BP4D_TASK_NAMES, validation_subjects
from tfq_noise.data.lazy import LazyImages
from tfq_noise.tasks import MaskedMultiLabelTask
from tfq_noise.quantization import QuantizationSpec, plan_model, quantize_model
from tfq_noise.tasks import MultiLabelTask, f1_scores

from bp4d_fixture import frame_colour, write_fake_bp4d

REPO = Path(__file__).resolve().parents[1]


def _inner_type(layer) -> str:
    """The class name of a layer, looking through tfmot's QuantizeWrapper."""
    return type(getattr(layer, "layer", layer)).__name__


# --------------------------------------------------------------------- models


def test_registry_and_task_names():
    assert {"ferplus", "bp4d"} <= set(PREPARERS)
    assert {"multitask", "multitask_small_cnn", "multitask_inception_v3"} <= set(MODELS)
    assert task_names(8) == tuple(ferplus.EMOTIONS)
    assert task_names(12) == BP4D_TASK_NAMES == TASK_SETS["bp4d"]
    assert BP4D_TASK_NAMES[:3] == ("AU1", "AU2", "AU4") and BP4D_TASK_NAMES[-1] == "AU24"
    assert task_names(3) == ("task0", "task1", "task2")
    assert task_names(2, ["a", "b"]) == ("a", "b")
    with pytest.raises(ValueError, match="2 task names"):
        task_names(3, ["a", "b"])
    with pytest.raises(ValueError, match="layer names"):
        task_names(1, ["a b"])
    assert head_layer_names("fear") == {"bn": "head_fear_bn", "hidden": "head_fear_hidden", "dense": "head_fear_dense"}
    assert head_layer_bits({"happiness": (2, 8), "AU12": [4, 4]}) == {
        "head_happiness_dense": (2, 8), "head_AU12_dense": (4, 4)}


def test_per_task_batchnorm_heads_are_kept_by_quantization():
    model = build_model("multitask_small_cnn", num_classes=8, input_shape=(48, 48, 1), width=8,
                        dropout_rate=0.1, dropout_position="head")
    assert model.output_shape == (None, 8)
    names = {layer.name: type(layer).__name__ for layer in model.layers}
    for task in ferplus.EMOTIONS:
        assert names[f"head_{task}_bn"] == "BatchNormalization"
        assert names[f"head_{task}_dense"] == "Dense"
        assert model.get_layer(f"head_{task}_dense").units == 1
        # Dropout after the task's BN (BN statistics then match inference), right before its logit.
        dropout = model.get_layer(f"head_{task}_dropout")
        assert dropout.input is model.get_layer(f"head_{task}_bn").output
        assert model.get_layer(f"head_{task}_dense").input is dropout.output
    # Each head's BatchNorm has its own statistics over the shared features.
    assert model.get_layer("head_neutral_bn").moving_mean is not model.get_layer("head_fear_bn").moving_mean

    recipe = methods.resolve("quantization", {"layer_bits": head_layer_bits({"happiness": (2, 8)})})
    quantized = recipe.transform_model(model, None)
    by_name = {layer.name: layer for layer in quantized.layers}
    for task in ferplus.EMOTIONS:
        bn = by_name.get(f"quant_head_{task}_bn", by_name.get(f"head_{task}_bn"))
        assert bn is not None and _inner_type(bn) == "BatchNormalization", f"{task}: BatchNorm lost"
        assert _inner_type(by_name.get(f"quant_head_{task}_dense", by_name.get(f"head_{task}_dense"))) == "Dense"
    x = np.random.default_rng(0).normal(size=(2, 48, 48, 1)).astype(np.float32)
    assert quantized(x, training=False).shape == (2, 8)

    plans, _ = plan_model(model, QuantizationSpec(layer_bits=head_layer_bits({"happiness": (2, 8)})))
    assert (plans["head_happiness_dense"].weight_bits, plans["head_happiness_dense"].input_bits) == (2, 8)
    assert plans["head_happiness_bn"].output_bits == 8  # the head's input, at its own bits
    assert plans["head_neutral_bn"].output_bits == plans["head_neutral_dense"].input_bits
    assert plans["stem"].weight_bits == 8  # first layer W8/A8


def test_heads_are_last_layers_for_the_quantization_scheme():
    model = build_model("multitask_small_cnn", num_classes=8, width=4)
    plans, _ = plan_model(model, QuantizationSpec())
    assert all(plans[f"head_{t}_dense"].weight_bits == 8 for t in ferplus.EMOTIONS)


def test_inception_v3_builds_small_with_per_au_heads():
    with pytest.raises(ValueError, match=">= 75"):
        build_model("multitask_inception_v3", num_classes=12, input_shape=(64, 64, 3))
    model = build_model("multitask_inception_v3", num_classes=12, input_shape=(75, 75, 3), weights=None,
                        dropout_rate=0.1)
    assert model.output_shape == (None, 12)
    layers = {layer.name for layer in model.layers}
    assert {f"head_AU{au}_bn" for au in bp4d.AUS} <= layers and "mixed10" in layers  # encoder inlined
    plans, _ = plan_model(model, QuantizationSpec())  # the scheme accepts every layer of the graph
    assert plans["head_AU24_dense"].weight_bits in (4, 8)


# --------------------------------------------------------------------- F1 and the masked task


def test_f1_hand_checked():
    y_true = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]])
    y_pred = np.array([[1, 0], [0, 1], [1, 1], [0, 1], [1, 1]])
    # Task 0: TP 2 (rows 0, 4), FP 1 (row 2), FN 1 (row 1) -> 2*2 / (4 + 1 + 1) = 2/3.
    # Task 1: TP 2 (rows 1, 2), FP 2 (rows 3, 4), FN 0 -> 4 / 6 = 2/3; masking row 3 -> 4 / 5.
    np.testing.assert_allclose(f1_scores(y_true, y_pred), [2 / 3, 2 / 3])
    mask = np.ones_like(y_true)
    mask[3, 1] = 0
    np.testing.assert_allclose(f1_scores(y_true, y_pred, mask), [2 / 3, 4 / 5])
    np.testing.assert_allclose(f1_scores(np.zeros((3, 1)), np.zeros((3, 1))), [0.0])  # undefined -> 0
    task = MultiLabelTask(["a", "b"])
    logits = np.where(y_pred > 0, 2.0, -2.0)
    scores = task.score(logits, y_true, "test_", mask)
    assert scores["test_f1_a"] == pytest.approx(2 / 3) and scores["test_f1_b"] == pytest.approx(0.8)
    assert scores["test_average_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_masked_task_loss_and_fit_with_per_label_weights():
    task = MaskedMultiLabelTask(["a", "b", "c"])
    y = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    logits = np.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]], np.float32)
    mask = np.array([[1, 1, 0], [1, 0, 1]], np.float32)
    for smoothing in (0.0, 0.1):
        targets = y * (1 - smoothing) + smoothing / 2
        bce = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
        per_entry = task.loss(smoothing)(tf.constant(y), tf.constant(logits)).numpy()
        np.testing.assert_allclose(per_entry, bce, rtol=1e-5)
        # As Keras applies it: weighted per entry, averaged over all B·T entries.
        inputs = keras.Input((3,))
        identity = keras.Model(inputs, keras.layers.Activation("linear")(inputs))
        identity.compile(loss=task.loss(smoothing))
        got = identity.evaluate(logits, y, sample_weight=mask, verbose=0)
        assert got == pytest.approx(float((bce * mask).sum() / mask.size), rel=1e-5)
    # Keras' BinaryCrossentropy (the base task) cannot take [B, T] weights; this one trains with them.
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile("adam", loss=task.loss(0.1), metrics=task.fit_metrics())
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    labels = (np.random.default_rng(1).random((16, 3)) > 0.5).astype(np.float32)
    weights = (np.random.default_rng(2).random((16, 3)) > 0.3).astype(np.float32)
    history = model.fit(x, labels, sample_weight=weights, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and 0 <= history.history["accuracy"][0] <= 1


# --------------------------------------------------------------------- FER+


def _ferplus_config(**overrides) -> RunConfig:
    base = dict(experiment="t", dataset="ferplus", model="multitask_small_cnn", method="baseline",
                noise_type="annotators", noise_rate=0.0, train_size=300, epochs=1, batch_size=64,
                eval_train_size=64, dataset_kwargs={"val_size": 120, "test_size": 120})
    base.update(overrides)
    return RunConfig(**base)


def test_ferplus_preparer(ferplus_dir, capsys):
    paths = DataPaths(ferplus_dir=str(ferplus_dir))
    data = prepare(_ferplus_config(), paths)
    assert "warning: decision_threshold=0.5 is outside (0.100, 0.200]" in capsys.readouterr().out
    assert data.train_images.shape == (300, 48, 48, 1) and data.train_images.dtype == np.uint8
    assert data.train_labels.shape == data.train_clean_labels.shape == data.train_corrupted.shape == (300, 8)
    assert data.task.task_names == list(ferplus.EMOTIONS) and data.task.threshold == 0.5
    np.testing.assert_array_equal(data.train_corrupted, (data.train_labels > 0.5) != (data.train_clean_labels > 0.5))
    assert data.train_corrupted.any() and data.info["annotators"] == 1
    assert data.info["train_flip_rate"] == pytest.approx(data.train_corrupted.mean())
    # Test: FER2013Test against the 10-vote reference; validation: FER2013Valid, noisy by default.
    test = ferplus.load_split("test", str(ferplus_dir))
    valid = ferplus.load_split("valid", str(ferplus_dir), num_annotators=1, seed=0)
    assert len(data.test_images) == len(data.val_images) == 120
    rows = [int(np.flatnonzero((test.images == image).all(axis=(1, 2, 3)))[0]) for image in data.test_images[:5]]
    np.testing.assert_array_equal(data.test_labels[:5], test.reference[rows])
    rows = [int(np.flatnonzero((valid.images == image).all(axis=(1, 2, 3)))[0]) for image in data.val_images[:5]]
    np.testing.assert_array_equal(data.val_labels[:5], valid.noisy[rows])
    clean = prepare(_ferplus_config(validation_labels="clean"), paths)
    np.testing.assert_array_equal(clean.val_labels[:5], valid.reference[rows])
    np.testing.assert_array_equal(clean.train_images, data.train_images)  # images do not depend on the run
    other_seed = prepare(_ferplus_config(seed=1), paths)  # the seed draws which annotator labels each image
    assert (other_seed.train_labels != data.train_labels).any()
    np.testing.assert_array_equal(other_seed.train_clean_labels, data.train_clean_labels)
    assert data.info["matched_decision_range"] == [0.1, 0.2]  # k = 1: 0.5 lies outside, a warning says so
    capsys.readouterr()
    three = prepare(_ferplus_config(dataset_kwargs={"annotators": 3, "val_size": 120, "test_size": 120}), paths)
    assert three.info["matched_decision_range"] == [0.3, 0.5333] and "warning" not in capsys.readouterr().out
    # Matched (k = 3 at 0.5): perfect on every task that has positives in this 120-image subset (F1 of a
    # task without positives is 0 by convention); unmatched (k = 1 at 0.5): well below.
    assert set(three.info["oracle_per_task_f1"].values()) <= {0.0, 1.0}
    assert data.info["oracle_average_f1"] < three.info["oracle_average_f1"] - 0.2
    np.testing.assert_array_equal(three.train_clean_labels, data.train_clean_labels)
    assert three.info["train_flip_rate"] < data.info["train_flip_rate"]
    with pytest.raises(ValueError, match="noise_type must be 'annotators'"):
        prepare(_ferplus_config(noise_type="symmetric"), paths)
    with pytest.raises(ValueError, match="noise_rate must be 0"):
        prepare(_ferplus_config(noise_rate=0.4), paths)
    with pytest.raises(ValueError, match="unknown dataset_kwargs"):
        prepare(_ferplus_config(dataset_kwargs={"annotator": 3}), paths)


def test_ferplus_training_reports_the_test_f1_of_the_selected_epoch(ferplus_dir, tmp_path, monkeypatch):
    from tfq_noise.train import release_memory, train

    # Validation average F1 scripted to peak at the middle epoch, so "best" and "last" differ;
    # the test F1 stays real and must come from the restored middle-epoch weights.
    scripted = iter([0.3, 0.9, 0.1])
    real_score = MultiLabelTask.score

    def score(self, logits, labels, prefix, mask=None):
        out = real_score(self, logits, labels, prefix, mask)
        if prefix == "val_":
            out["val_average_f1"] = next(scripted, 0.0)
        return out

    monkeypatch.setattr(MultiLabelTask, "score", score)
    config = _ferplus_config(method="quantization+early_stopping", model_kwargs={"width": 8}, epochs=3,
                             hparams={"patience": 3})
    final = train(config, tmp_path / config.run_name, DataPaths(ferplus_dir=str(ferplus_dir)))
    release_memory()
    written = json.loads((tmp_path / config.run_name / "final.json").read_text())
    assert list(written["per_task_f1"]) == sorted(ferplus.EMOTIONS)  # final.json keys are sorted
    assert set(final["per_task_f1"]) == set(ferplus.EMOTIONS)
    assert written["average_f1"] == pytest.approx(np.mean(list(written["per_task_f1"].values())))
    assert written["realized_flip_rate"] > 0 and written["decision_threshold"] == 0.5
    assert written["dataset_kwargs"] == {"val_size": 120, "test_size": 120}
    # The reported F1 is the test F1 of the epoch with the best validation average F1, not the last epoch's.
    history = results.read_csv(tmp_path / config.run_name / results.HISTORY)
    val = [row["val_average_f1"] for row in history]
    assert len(history) == 3 and val == [0.3, 0.9, 0.1] and written["selected_epoch"] == 1
    chosen = history[written["selected_epoch"]]
    for task, f1 in written["per_task_f1"].items():
        assert f1 == pytest.approx(chosen[f"test_f1_{task}"], abs=1e-6)
    assert config.run_name == ("annotators_test_size-120_val_size-120__quantization-early_stopping_patience-3_width-8"
                               "__seed0")


# --------------------------------------------------------------------- BP4D

# Two subjects of each of the three parts: fold 1 tests on part 1 (F001, M007).
FIXTURE_SUBJECTS = ("F001", "M007", "M011", "F003", "F007", "F015")


@pytest.fixture
def bp4d_root(tmp_path):
    truth = write_fake_bp4d(str(tmp_path / "bp4d"), FIXTURE_SUBJECTS, ("T1", "T2"), num_frames=4)
    return str(tmp_path / "bp4d"), truth


def _bp4d_config(**kwargs) -> RunConfig:
    dataset_kwargs = {"fold": 1, "image_size": 16, "tasks": ["T1", "T2"], "missing_sequences": "skip",
                      "in_memory": True}
    dataset_kwargs.update(kwargs.pop("dataset_kwargs", {}))
    base = dict(experiment="t", dataset="bp4d", model="multitask_small_cnn", model_kwargs={"width": 4},
                method="label_smoothing", noise_type="original", noise_rate=0.0, validation_fraction=0.25,
                epochs=1, batch_size=8, eval_train_size=8, dataset_kwargs=dataset_kwargs)
    base.update(kwargs)
    return RunConfig(**base)


def test_bp4d_preparer_splits_by_subject_and_masks_unknown(bp4d_root):
    root, truth = bp4d_root
    data = prepare(_bp4d_config(), DataPaths(bp4d_dir=root))
    info = data.info
    assert info["test_subjects"] == ["F001", "M007"]
    assert len(info["validation_subjects"]) == 1 and len(info["train_subjects"]) == 3
    assert set(info["validation_subjects"]) | set(info["train_subjects"]) == {"M011", "F003", "F007", "F015"}
    assert info["validation_subjects"] == list(validation_subjects(["M011", "F003", "F007", "F015"], 0.25, 1))
    assert data.train_images.shape == (3 * 2 * 4, 16, 16, 3) and len(data.test_images) == 2 * 2 * 4
    assert data.task.task_names == list(BP4D_TASK_NAMES) and isinstance(data.task, MaskedMultiLabelTask)
    expected = bp4d.load_frames(root, subjects=("F001", "M007"), tasks=("T1", "T2"))
    np.testing.assert_array_equal(data.test_labels, expected.labels)
    np.testing.assert_array_equal(data.test_weights, expected.mask)
    assert (data.train_weights == 0).any() and not data.train_corrupted.any()
    # Every frame's pixels are its own (solid colour, resized).
    index = FIXTURE_SUBJECTS.index("F001")
    assert np.abs(data.test_images[0].astype(int) - frame_colour(index, 0, 98)).max() <= 3
    np.testing.assert_array_equal(data.mean, [127.5] * 3)
    with pytest.raises(FileNotFoundError):  # every fold subject's CSV is required by default
        prepare(_bp4d_config(dataset_kwargs={"missing_sequences": "error"}), DataPaths(bp4d_dir=root))


def test_bp4d_lazy_images_match_in_memory(bp4d_root):
    root, _ = bp4d_root
    paths = DataPaths(bp4d_dir=root)
    eager = prepare(_bp4d_config(), paths)
    lazy = prepare(_bp4d_config(dataset_kwargs={"in_memory": False}), paths)
    assert isinstance(lazy.train_images, LazyImages) and lazy.input_shape == (16, 16, 3)
    np.testing.assert_array_equal(lazy.test_images.load(), eager.test_images)
    subset = lazy.train_images[np.array([1, 5])]
    assert isinstance(subset, LazyImages) and len(subset) == 2
    np.testing.assert_array_equal(lazy.train_images[5], eager.train_images[5])
    kwargs = dict(batch_size=5, training=False, mean=eager.mean, std=eager.std, sample_weights=eager.test_weights)
    got = list(lazy.test_images.make_dataset(lazy.test_labels, **kwargs))
    want = list(pipeline.make_dataset(eager.test_images, eager.test_labels, **kwargs))
    assert len(got) == len(want) == 4  # 16 test frames
    for a, b in zip(got, want):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-6)
    with pytest.raises(TypeError, match="read lazily"):
        np.asarray(lazy.train_images)


def _dispatching(make_dataset):
    """pipeline.make_dataset with the dispatch to lazily read images that BP4D needs (see tfq_noise.data.lazy)."""

    def wrapped(images, *args, **kwargs):
        if hasattr(images, "make_dataset"):
            return images.make_dataset(*args, **kwargs)
        return make_dataset(images, *args, **kwargs)

    return wrapped


@pytest.mark.parametrize("in_memory", [True, False])
def test_bp4d_end_to_end_training(bp4d_root, tmp_path, monkeypatch, in_memory):
    from tfq_noise import train as train_module

    if not in_memory:  # until pipeline.make_dataset dispatches to LazyImages itself
        monkeypatch.setattr(train_module, "make_dataset", _dispatching(train_module.make_dataset))
        monkeypatch.setattr(pipeline, "make_dataset", _dispatching(pipeline.make_dataset))
    root, _ = bp4d_root
    config = _bp4d_config(dataset_kwargs={"in_memory": in_memory},
                          method="dropout+early_stopping" if in_memory else "label_smoothing")
    final = train_module.train(config, tmp_path / "run", DataPaths(bp4d_dir=root))
    train_module.release_memory()
    assert set(final["per_task_f1"]) == set(BP4D_TASK_NAMES)
    assert final["average_f1"] == pytest.approx(np.mean(list(final["per_task_f1"].values())))
    assert final["dataset"] == "bp4d" and final["run"].startswith("original_fold-1_")
    assert (tmp_path / "run" / "final.json").exists()


# --------------------------------------------------------------------- Table 1


def _fake_run(directory: Path, method: str, seed: int, scores: dict, hparams=None, **extra):
    resolved = methods.resolve(method, hparams or {}).hparams
    config = RunConfig(method=method, hparams=hparams or {}, seed=seed, noise_type="annotators", epochs=10)
    run = directory / config.run_name
    run.mkdir(parents=True)
    final = {"dataset": "ferplus", "method": method, "seed": seed, "hparams": dict(resolved), "epochs": 10,
             "epochs_trained": 10, "selected_epoch": 7, "per_task_f1": scores,
             "average_f1": float(np.mean(list(scores.values()))), "noise_type": "annotators", "noise_rate": 0.0,
             "test_accuracy": 0.5, "test_accuracy_last5": None, "best_test_accuracy": 0.5, "wall_seconds": 1.0,
             **extra}
    (run / "final.json").write_text(json.dumps(final, sort_keys=True))


def test_table1_on_fake_runs(tmp_path):
    from experiments import table1

    exp = tmp_path / "exp"
    tasks = ("neutral", "happiness")
    _fake_run(exp, "early_stopping", 0, {"neutral": 0.5, "happiness": 0.7}, oracle_average_f1=1.0)
    _fake_run(exp, "early_stopping", 1, {"neutral": 0.7, "happiness": 0.9})
    _fake_run(exp, "quantization+early_stopping", 0, {"neutral": 0.6, "happiness": 0.8})
    _fake_run(exp, "quantization+early_stopping", 1, {"neutral": 0.8, "happiness": 0.8})
    _fake_run(exp, "quantization+early_stopping", 0, {"neutral": 0.1, "happiness": 0.2},
              hparams={"layer_bits": head_layer_bits({t: (2, 4) for t in tasks})})
    _fake_run(exp, "pruning+early_stopping", 0, {"neutral": 0.4, "happiness": 0.4})  # selected 7 >= prune epoch 5
    _fake_run(exp, "dropout+early_stopping", 0, {"neutral": 0.3, "happiness": 0.3}, selected_epoch=2)
    _fake_run(exp, "pruning+early_stopping", 1, {"neutral": 0.4, "happiness": 0.6}, selected_epoch=3)
    (exp / "unfinished").mkdir()

    assert table1.main([str(exp)]) == 0
    text = (exp / "table1.md").read_text()
    ours = text.split("\n## ")[0]  # before the paper's table
    lines = {line.split(" | ")[0].lstrip("| "): line for line in ours.splitlines() if line.startswith("| ")}
    # Baseline: neutral 60 ± 14.1, happiness 80 ± 14.1, average (60, 80) -> 70 ± 14.1 over 2 seeds.
    assert lines["Baseline"].startswith("| Baseline | 60.0 ± 14.1 | 80.0 ± 14.1 | 70.0 ± 14.1 | +0.0 |")
    # Quantization: averages 70, 80 -> 75 ± 7.1; paired gains +10, 0 over the Baseline -> +5.0 ± 7.1.
    assert "| 75.0 ± 7.1 | +5.0 ± 7.1 (1/2 > 0) |" in lines["Quantization"]
    assert "Quantization [heads W2/A4]" in lines and "Early Stopping" not in lines  # every method stops early
    rows = [label for label in lines if label in ("Baseline", "Dropout", "Pruning", "Quantization")]
    assert rows == ["Baseline", "Dropout", "Pruning", "Quantization"]  # the paper's order
    assert "Pruning: in 1 of 2 runs early stopping kept an epoch before the pruning epoch" in text
    assert "Rows hold different seeds" in text  # Dropout has seed 0 only
    assert " only." not in text.splitlines()[2]  # no --methods/--seeds filter was given
    assert "10-vote shares): 100.0 average F1" in text
    assert "| Quantization | 51.7 | 48.2 |" in text  # the paper's table for comparison
    png = (exp / "table1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not [p for p in exp.iterdir() if p.name.startswith(".")]  # no temporary files left

    # Several directories (folds): a seed's score is the mean over folds, then mean ± std over seeds.
    fold2 = tmp_path / "fold2"
    _fake_run(fold2, "early_stopping", 0, {"neutral": 0.7, "happiness": 0.9})
    table = table1.build_table([exp, fold2])
    baseline = next(r for r in table["rows"] if r["label"] == "Baseline")
    np.testing.assert_allclose(baseline["mean"], [65.0, 85.0, 75.0])  # seed 0: (60+80)/2 ... folds averaged
    assert baseline["folds_per_seed"] == [1, 2]

    # Filters: reference rows from one folder, variants from another, on chosen methods and seeds.
    variants = tmp_path / "variants"
    _fake_run(variants, "quantization+early_stopping", 1, {"neutral": 0.2, "happiness": 0.4},
              hparams={"layer_bits": head_layer_bits({t: (4, 4) for t in tasks})})
    assert table1.main([str(variants), str(exp), "--methods=early_stopping, quantization+early_stopping",
                        "--seeds=1"]) == 0
    text = (variants / "table1.md").read_text().split("\n## ")[0]
    labels = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines() if line.startswith("| ")][1:]
    assert labels == ["Baseline", "Quantization", "Quantization [heads W4/A4]"]  # no Pruning, no seed-0-only W2/A4
    assert "| Quantization [heads W4/A4] | 20.0 | 40.0 | 30.0 | -50.0 |" in text  # vs Baseline seed 1: (70+90)/2
    assert "methods early_stopping, quantization+early_stopping only, seeds 1 only" in text
    before = (exp / "table1.md").read_text()
    assert table1.main([str(exp), "--seeds=7"]) == 2  # a seed with no run: a clear error, no table written
    with pytest.raises(ValueError, match=r"methods \['quantisation'\] have no finished run"):
        table1.build_table([exp], methods=["early_stopping", "quantisation"])  # a typo does not drop a row silently
    assert (exp / "table1.md").read_text() == before
    with pytest.raises(SystemExit):
        table1.main([str(exp), "--seeds=one"])

    # Two data settings in two folders: averaging them as folds is refused; side by side they are compared.
    k3 = tmp_path / "k3"
    _fake_run(k3, "early_stopping", 0, {"neutral": 0.8, "happiness": 0.9}, dataset_kwargs={"annotators": 3})
    _fake_run(k3, "early_stopping", 1, {"neutral": 0.6, "happiness": 0.7}, dataset_kwargs={"annotators": 3})
    _fake_run(k3, "quantization+early_stopping", 0, {"neutral": 0.9, "happiness": 0.9},
              dataset_kwargs={"annotators": 3})
    with pytest.raises(ValueError, match="--side_by_side"):
        table1.build_table([exp, k3])
    with pytest.raises(SystemExit):  # --out is required: the directories are different experiments
        table1.main([str(exp), str(k3), "--side_by_side"])
    out = tmp_path / "compare"
    assert table1.main([str(exp), str(k3), "--side_by_side", f"--out={out}",
                        "--methods=early_stopping,quantization+early_stopping"]) == 0
    text = (out / "table1_side_by_side.md").read_text()
    assert "- k3 (annotators=3)" in text
    # exp: Baseline 70 ± 14.1 (2 seeds); k3: Baseline (85, 65) -> 75 ± 14.1; its Quantization 90, seed 0 only:
    # paired with the Baseline's seed 0 (85), +5.0, not 90 - 75.
    assert "| Baseline | 70.0 ± 14.1 | +0.0 | 2 | 75.0 ± 14.1 | +0.0 | 2 |" in text
    assert "| Quantization | 75.0 ± 7.1 | +5.0 ± 7.1 (1/2 > 0) | 2 | 90.0 | +5.0 | 1 |" in text
    assert "| Quantization [heads W2/A4] | 15.0 | -45.0 | 1 | – | – | 0 |" in text
    assert (out / "table1_side_by_side.png").read_bytes()[:4] == b"\x89PNG"
    source = results.figure_source(out / "table1_side_by_side.png")  # it names what redraws it
    assert source["inputs"] == ["../exp", "../k3"] and source["command"] == (
        f"python -m experiments.table1 {exp.as_posix()} {k3.as_posix()} "
        f"--methods=early_stopping,quantization+early_stopping --side_by_side --out={out.as_posix()}")
    assert results.stale_figure(out / "table1_side_by_side.png") is None

    # Two data settings (k = 1 and k = 3) in one folder are refused, not averaged together.
    _fake_run(exp, "weight_decay+early_stopping", 0, {"neutral": 0.5, "happiness": 0.5},
              dataset_kwargs={"annotators": 3})
    with pytest.raises(ValueError, match="differ in dataset_kwargs"):
        table1.build_table([exp])


def test_table1_names_head_bits_in_task_order_whatever_the_key_order():
    from experiments import table1

    stored = {f"head_{t}_dense": [2, 4] for t in ("sadness", "contempt")}  # final.json sorts keys
    stored.update({f"head_{t}_dense": [8, 8] for t in ("surprise", "neutral", "happiness")})
    assert table1._head_bits_text(dict(sorted(stored.items()))) == \
        "heads W8/A8 {neutral, happiness, surprise}, W2/A4 {sadness, contempt}"


def test_paper_rows_average_to_their_reported_average():
    from experiments import table1

    for label, (values, average) in table1.PAPER_BP4D.items():
        assert len(values) == 12
        assert np.mean(values) == pytest.approx(average, abs=0.06), label


# --------------------------------------------------------------------- flagfiles


@pytest.mark.parametrize("name, dataset", [("ferplus", "ferplus"), ("bp4d", "bp4d"), ("ferplus_head_bits", "ferplus")])
def test_flagfiles_expand_to_the_table1_grid(name, dataset, monkeypatch):
    from absl import flags

    from experiments import run, table1
    from tfq_noise.data import noise
    from tfq_noise.data import DATASET_NOISE_TYPES as NOISE_TYPES  # noqa: F401

    try:
        flags.FLAGS(["run", f"--flagfile={REPO / 'experiments' / 'configs' / (name + '.flags')}"])
        configs = run.build_grid()
    finally:
        flags.FLAGS.unparse_flags()
    assert len(configs) == 30 and {c.seed for c in configs} == {0, 1, 2, 3, 4}
    assert all(c.dataset == dataset and c.recipe.selects_best_epoch() for c in configs)
    assert len({c.run_name for c in configs}) == 30 and max(len(c.run_name) for c in configs) < 250
    labels = {table1.row_label(c.method, {k: v for k, v in c.resolved_hparams.items()
                                          if methods.default_hparams(c.method).get(k) != v}, True) for c in configs}
    if name != "ferplus_head_bits":
        assert labels == set(table1.PAPER_BP4D)
    else:
        assert "Quantization [heads W8/A8 {neutral, happiness, surprise}, W2/A4 {sadness, anger, disgust, fear, contempt}]" in labels
        for config in configs:
            assert set(config.resolved_hparams.get("head_bits") or {}) <= set(ferplus.EMOTIONS)
