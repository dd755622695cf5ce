"""Tests of the ``cleanlab`` method (confident learning through the training loop)."""

from __future__ import annotations

import dataclasses

import tfq_noise  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest

from tfq_noise import methods, results
from tfq_noise.config import RunConfig
from tfq_noise.data import RunData
from tfq_noise.methods.confident_learning import fold_data, fold_indices, flag_quality
from tfq_noise.tasks import ClassificationTask
from tfq_noise.train import train, train_fold, train_folds

TINY = dict(experiment="test", model_kwargs={"blocks_per_stage": 1}, train_size=300, batch_size=64,
            eval_train_size=64, noise_rate=0.4, epochs=1)


def quiet(*args, **kwargs):
    pass


def test_folds_partition_the_training_set_and_are_stratified():
    labels = np.repeat(np.arange(4), 25)
    folds = fold_indices(labels, 5, seed=0)
    together = np.concatenate(folds)
    assert sorted(together.tolist()) == list(range(100))  # every example held out exactly once
    for held in folds:
        assert np.bincount(labels[held], minlength=4).tolist() == [5, 5, 5, 5]
    assert [f.tolist() for f in fold_indices(labels, 5, seed=0)] == [f.tolist() for f in folds]  # seeded
    assert [f.tolist() for f in fold_indices(labels, 5, seed=1)] != [f.tolist() for f in folds]


def test_flag_quality_by_hand():
    flagged = np.array([1, 1, 1, 0, 0, 0], bool)
    corrupted = np.array([1, 1, 0, 1, 0, 0], bool)
    quality = flag_quality(flagged, corrupted)
    assert quality["precision"] == pytest.approx(2 / 3)
    assert quality["recall"] == pytest.approx(2 / 3)
    assert quality["f1"] == pytest.approx(2 / 3)


def test_settings_are_checked_and_fold_runs_keep_the_other_methods():
    with pytest.raises(ValueError, match="cleanlab_folds"):
        methods.resolve("cleanlab", {"cleanlab_folds": 1})
    with pytest.raises(ValueError, match="cleanlab_filter_by"):
        methods.resolve("cleanlab", {"cleanlab_filter_by": "everything"})
    assert methods.resolve("cleanlab").fold_spec() == "baseline"
    assert methods.resolve("cleanlab+quantization").fold_spec() == "quantization"
    assert methods.resolve("cleanlab").trainings() == 6
    assert methods.resolve("cleanlab", {"cleanlab_folds": 3}).trainings() == 4
    assert methods.resolve("quantization").trainings() == 1


def _synthetic_data(n=400, classes=4, rate=0.3, seed=0) -> RunData:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, classes, n)
    corrupted = rng.random(n) < rate
    noisy = np.where(corrupted, (clean + rng.integers(1, classes, n)) % classes, clean)
    images = np.zeros((n, 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256  # tells examples apart
    return RunData(task=ClassificationTask(classes), train_images=images, train_labels=noisy,
                   train_clean_labels=clean, train_corrupted=corrupted, val_images=images[:0],
                   val_labels=noisy[:0], test_images=images[:10], test_labels=clean[:10],
                   mean=np.zeros(3, np.float32), std=np.ones(3, np.float32), info={},
                   train_index=np.arange(1000, 1000 + n))


def test_flags_come_from_held_out_predictions_assembled_by_position():
    """Fold 'models' that know the clean labels: cleanlab must flag exactly the wrong labels.

    A fold assembled in the wrong place (or probabilities of examples the fold trained on) would flag
    clean examples and miss wrong ones.
    """
    data = _synthetic_data()
    recipe = methods.resolve("cleanlab")
    seen = []

    def fit_fold(name, fold):
        seen.append(name)
        assert len(fold.train_images) + len(fold.val_images) == len(data.train_images)
        assert not set(fold.train_index) & set(fold.val_index)  # held out from its own training
        clean = data.train_clean_labels[fold.val_index - 1000]
        probs = np.full((len(clean), 4), 0.02)
        probs[np.arange(len(clean)), clean] = 0.94
        return {"val_probs": probs.astype(np.float16)}

    kept, info = recipe.filter_training_data(data, seed=0, fit_fold=fit_fold)
    assert seen == [f"fold{k}" for k in range(5)]
    stats = info["cleanlab"]
    assert stats["flagged"] == int(data.train_corrupted.sum())
    assert stats["precision"] == 1.0 and stats["recall"] == 1.0
    assert stats["wrong_labels_kept"] == 0
    assert len(kept.train_images) == stats["kept"] == int((~data.train_corrupted).sum())
    assert not kept.train_corrupted.any()
    assert np.array_equal(kept.train_labels, kept.train_clean_labels)
    assert np.array_equal(kept.train_index, data.train_index[~data.train_corrupted])


def test_multilabel_data_is_refused():
    data = _synthetic_data()
    data = dataclasses.replace(data, task=type("T", (), {"multilabel": True, "num_classes": 4})())
    with pytest.raises(ValueError, match="single-label"):
        methods.resolve("cleanlab").filter_training_data(data, 0, lambda name, fold: {})


def test_fold_data_holds_out_its_examples():
    data = _synthetic_data(n=20)
    fold = fold_data(data, np.array([0, 5, 19]))
    assert fold.val_index.tolist() == [1000, 1005, 1019]
    assert np.array_equal(fold.val_labels, data.train_labels[[0, 5, 19]])
    assert len(fold.train_images) == 17 and 1005 not in fold.train_index


def test_a_cleanlab_run_trains_its_folds_then_the_model_on_the_kept_examples(tmp_path, tiny_run_data):
    config = RunConfig(**TINY, method="cleanlab", hparams={"cleanlab_folds": 2})
    data = tiny_run_data(config)
    run_dir = tmp_path / config.run_name
    final = train(config, run_dir, data=data, print_fn=quiet)
    info = final["data_filter"]["cleanlab"]
    assert final["trainings"] == 3
    assert info["folds"] == 2 and info["flagged"] + info["kept"] == len(data.train_images)
    for k in range(2):
        fold_dir = run_dir / results.FOLDS / f"fold{k}"
        fold_config = results.read_json(fold_dir / results.CONFIG)
        assert fold_config["method"] == "baseline" and "cleanlab_folds" not in fold_config["hparams"]
        assert results.run_state(fold_dir) == "done"
    # Its wall time counts the fold trainings it ran, not only the final model's.
    folds_seconds = sum(results.read_json(run_dir / results.FOLDS / f"fold{k}" / results.FINAL)["wall_seconds"]
                        for k in range(2))
    epochs_seconds = sum(r["epoch_seconds"] for r in results.read_csv(run_dir / results.HISTORY))
    assert final["processes"] == 1 and final["wall_seconds"] >= folds_seconds + epochs_seconds
    predictions = results.read_npz(run_dir / results.PREDICTIONS)
    assert len(predictions["train_probs"]) == info["kept"]  # trained on the kept examples only
    assert set(predictions["train_index"]) <= set(data.train_index)
    # The fold runs' held-out predictions cover every training example once, for find_label_errors.
    from experiments.find_label_errors import load_examples

    examples, _ = load_examples([run_dir / results.FOLDS / f"fold{k}" for k in range(2)], split="val")
    assert sorted(examples.index.tolist()) == sorted(data.train_index.tolist())
    assert examples.clean is not None and np.array_equal(
        examples.labels != examples.clean, data.train_corrupted[np.argsort(data.train_index)][
            np.searchsorted(np.sort(data.train_index), examples.index)])
    # Finished folds are reused, not trained again.
    stamps = [(run_dir / results.FOLDS / f"fold{k}" / results.FINAL).stat().st_mtime_ns for k in range(2)]
    train(config, run_dir, data=data, print_fn=quiet)
    assert [(run_dir / results.FOLDS / f"fold{k}" / results.FINAL).stat().st_mtime_ns for k in range(2)] == stamps


def test_folds_split_over_jobs_are_reused_by_the_run(tmp_path, tiny_run_data):
    """--only_folds: one job trains chosen folds; the run itself reuses them, waiting for a held one."""
    import json
    import threading
    import time

    config = RunConfig(**TINY, method="cleanlab", hparams={"cleanlab_folds": 3})
    data = tiny_run_data(config)
    run_dir = tmp_path / config.run_name
    folds_dir = run_dir / results.FOLDS
    with pytest.raises(ValueError, match="out of range"):
        train_folds(config, run_dir, [3], data=data, print_fn=quiet)
    with pytest.raises(ValueError, match="trains no folds"):
        train_folds(dataclasses.replace(config, method="quantization", hparams={}), run_dir, [0], data=data)
    assert not run_dir.exists()  # refused before anything is written
    # Fold 0 is held by a job on another host: skipped, not trained; fold 2 is trained.
    (folds_dir / "fold0").mkdir(parents=True)
    (folds_dir / "fold0" / results.LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert train_folds(config, run_dir, [2, 0], data=data, print_fn=quiet) == [2]
    assert results.run_state(folds_dir / "fold2") == "done" and not (folds_dir / "fold0" / results.FINAL).exists()
    assert not (folds_dir / "fold1").exists() and results.run_state(run_dir) == "partial"
    assert not (folds_dir / "fold2" / results.LOCK).exists()  # released
    held_out = fold_indices(np.asarray(data.train_labels, np.int64), 3, config.seed)
    predictions = results.read_npz(folds_dir / "fold2" / results.PREDICTIONS)
    assert sorted(predictions["val_index"]) == sorted(data.train_index[held_out[2]])  # the run's own fold 2
    # A fold another job holds is waited for, then trained once that job releases it.
    (folds_dir / "fold0" / results.LOCK).unlink()
    (folds_dir / "fold1").mkdir()
    lock = folds_dir / "fold1" / results.LOCK
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    release = threading.Timer(2.0, lock.unlink)
    lines, start = [], time.time()
    release.start()
    try:
        assert train_fold(config, folds_dir / "fold1", fold_data(data, held_out[1]),
                          print_fn=lambda line, **kwargs: lines.append(line), poll_seconds=0.5) is not None
    finally:
        release.cancel()
    assert time.time() - start >= 2.0 and any("waiting" in line for line in lines)
    # The run trains only fold 0 and its final model, reusing folds 1 and 2 untouched.
    stamps = {k: (folds_dir / f"fold{k}" / results.FINAL).stat().st_mtime_ns for k in (1, 2)}
    final = train(config, run_dir, data=data, print_fn=quiet)
    assert {k: (folds_dir / f"fold{k}" / results.FINAL).stat().st_mtime_ns for k in (1, 2)} == stamps
    assert results.run_state(folds_dir / "fold0") == "done" and final["data_filter"]["cleanlab"]["folds"] == 3
