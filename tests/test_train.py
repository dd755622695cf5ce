"""Tests of ``tfq_noise.train``: resume after a kill, NaN records, the run's files, reloading, memory.

Runs are tiny (ResNet20 with one block per stage, 300 CIFAR-10 images, 200 test
images through ``train(..., data=...)``). The kill is real: a child process
that ends itself with ``os._exit`` as the third epoch begins, as a pre-empted
job would, then the run is resumed in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import tfq_noise  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import h5py
import numpy as np
import pytest

from tfq_noise import callbacks, keras, results, tasks
from tfq_noise.callbacks import predict_logits
from tfq_noise.config import RunConfig
from tfq_noise.train import (RunFailed, build_run_model, load_trained_model, release_memory, strip_optimizer_state,
                             train)

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = dict(experiment="test", model_kwargs={"blocks_per_stage": 1}, train_size=300, batch_size=64,
            eval_train_size=64, noise_rate=0.4)


def quiet(*args, **kwargs):
    pass


class Lines(list):
    def __call__(self, text, **kwargs):
        self.append(text)


# --------------------------------------------------------------------------------------
# Resume after a kill
# --------------------------------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent("""
    import dataclasses, os, sys
    import tfq_noise
    from tfq_noise import callbacks
    from tfq_noise.config import RunConfig
    from tfq_noise.data import DataPaths, prepare
    from tfq_noise.train import train

    config = RunConfig(**{config!r})
    data = prepare(config, DataPaths(cifar10_dir={cifar10_dir!r}))
    data = dataclasses.replace(data, test_images=data.test_images[:200], test_labels=data.test_labels[:200])
    begin = callbacks.ProgressPrinter.on_epoch_begin

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            os._exit(3)  # killed once the 2nd epoch is over (all its callbacks done), no clean-up
        begin(self, epoch, logs)

    callbacks.ProgressPrinter.on_epoch_begin = on_epoch_begin
    train(config, {run_dir!r}, data=data)
""")


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, cifar10_dir, tiny_run_data):
    """A 4-epoch run killed after epoch 2 in a child process, then resumed here."""
    config = RunConfig(**TINY, epochs=4)
    run_dir = tmp_path_factory.mktemp("resume") / config.run_name
    script = KILL_SCRIPT.format(config=config.to_dict(), cifar10_dir=str(cifar10_dir), run_dir=str(run_dir))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    killed_history = results.read_csv(run_dir / results.HISTORY)
    killed_state = results.run_state(run_dir)
    killed_clock = results.read_json(run_dir / results.CHECKPOINTS / "wall_clock.json")
    data = tiny_run_data(config)
    lines = Lines()
    begin = time.time()
    final = train(config, run_dir, data=data, print_fn=lines)
    return {"child": child, "killed_history": killed_history, "killed_state": killed_state, "lines": lines,
            "killed_clock": killed_clock, "resume_seconds": time.time() - begin,
            "final": final, "config": config, "run_dir": run_dir, "data": data,
            "history": results.read_csv(run_dir / results.HISTORY)}


def test_killed_run_left_two_epochs(resumed):
    child = resumed["child"]
    assert child.returncode == 3, child.stderr[-3000:]
    assert "epoch 2/4" in child.stdout and "epoch 3/4" not in child.stdout
    assert [r["epoch"] for r in resumed["killed_history"]] == [0, 1]
    assert resumed["killed_state"] == "partial"


def test_resume_continues_from_the_last_epoch(resumed):
    history = resumed["history"]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    # The rows of the killed process are kept as they were (epoch_seconds would differ if redone).
    assert history[:2] == resumed["killed_history"]
    # Only the remaining epochs were trained.
    assert [line.split("] ")[1].split(" (")[0] for line in resumed["lines"] if "] epoch " in line] == [
        "epoch 3/4", "epoch 4/4"]
    # 5 steps an epoch: too few to mean anything, said before the first epoch and kept in final.json.
    assert resumed["lines"][0].endswith("] warning: " + resumed["final"]["warnings"][0])
    assert resumed["final"]["warnings"][0].startswith("only 20 training steps")
    final = resumed["final"]
    assert final["epochs_trained"] == 4 and final["selected_epoch"] == 3
    assert results.run_state(resumed["run_dir"]) == "done"
    assert not (resumed["run_dir"] / results.CHECKPOINTS / "backup").exists()


def test_wall_seconds_count_every_process_of_a_resumed_run(resumed):
    killed, final, history = resumed["killed_clock"], resumed["final"], resumed["history"]
    # The killed process saved its time at its last epoch end: at least its two epochs.
    assert killed["processes"] == 1
    assert killed["seconds"] >= sum(r["epoch_seconds"] for r in history[:2])
    # The run's time is both processes', not the last one's alone.
    assert final["processes"] == 2
    assert final["wall_seconds"] >= killed["seconds"] + sum(r["epoch_seconds"] for r in history[2:])
    assert final["wall_seconds"] <= killed["seconds"] + resumed["resume_seconds"] + 0.2  # both rounded to 0.1 s


def test_a_run_whose_data_cannot_load_leaves_no_folder(tmp_path, monkeypatch):
    import tfq_noise.train as train_module

    def fail(config, paths):
        raise FileNotFoundError("no CIFAR-10 here")

    monkeypatch.setattr(train_module, "prepare", fail)
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 here"):
        train(RunConfig(**TINY), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_final_json_schema_and_summary(resumed):
    final, history = results.read_json(resumed["run_dir"] / results.FINAL), resumed["history"]
    assert final == resumed["final"]
    assert set(results.FINAL_KEYS) <= set(final)
    config = resumed["config"]
    assert (final["method"], final["noise_rate"], final["seed"], final["epochs"]) == ("baseline", 0.4, 0, 4)
    assert final["run"] == config.run_name == resumed["run_dir"].name
    accuracy = [r["test_accuracy"] for r in history]
    assert final["test_accuracy"] == accuracy[-1]
    assert final["test_accuracy_last5"] == pytest.approx(np.mean(accuracy[-5:]))
    assert final["best_test_accuracy"] == max(accuracy)
    assert final["realized_flip_rate"] == pytest.approx(np.mean(resumed["data"].train_corrupted))
    for name in (results.CONFIG, results.PROVENANCE, results.WEIGHTS):
        assert (resumed["run_dir"] / name).is_file(), name
    with h5py.File(resumed["run_dir"] / results.WEIGHTS, "r") as weights:  # the model's, not Adam's state
        assert "layers" in weights and "optimizer" not in weights
    assert RunConfig.from_dict(results.read_json(resumed["run_dir"] / results.CONFIG)).run_name == config.run_name
    for key in ("memorized", "corrected", "train_noisy_accuracy", "train_clean_accuracy", "test_accuracy",
                "val_accuracy", "loss", "trainmode_memorized", "trainmode_train_noisy_accuracy", "mode_gap"):
        assert all(r[key] is not None and np.isfinite(r[key]) for r in history), key
    for r in history:
        assert r["mode_gap"] == pytest.approx(r["trainmode_train_noisy_accuracy"] - r["train_noisy_accuracy"])
    assert final["last_mode_gap"] == history[-1]["mode_gap"]
    assert final["last_trainmode_memorized"] == history[-1]["trainmode_memorized"]


def test_predictions_are_saved_with_their_labels(resumed):
    """predictions.npz: the final model's class probabilities on train / val (read back as float16), with labels;
    no test set (nothing reads it)."""
    data = resumed["data"]
    saved = results.read_npz(resumed["run_dir"] / results.PREDICTIONS)
    assert saved["train_probs"].dtype == np.float16 and saved["train_probs"].shape == (len(data.train_images), 10)
    assert saved["val_probs"].shape == (len(data.val_images), 10)
    assert not any(key.startswith("test_") for key in saved)
    np.testing.assert_allclose(saved["train_probs"].astype(np.float32).sum(-1), 1.0, atol=1e-2)
    np.testing.assert_array_equal(saved["train_labels"], data.train_labels)
    np.testing.assert_array_equal(saved["train_clean_labels"], data.train_clean_labels)
    np.testing.assert_array_equal(saved["train_corrupted"], data.train_corrupted)
    np.testing.assert_array_equal(saved["train_index"], data.train_index)
    np.testing.assert_array_equal(saved["val_index"], data.val_index)
    # They are the final model's: within the coding's error of its own softmax, with the same predicted class.
    model, _, _ = load_trained_model(resumed["run_dir"])
    logits = predict_logits(model, data.train_images, data.mean, data.std).astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    assert np.abs(saved["train_probs"].astype(np.float64) - probs).max() < 0.1
    assert np.abs(saved["train_probs"].astype(np.float64) - probs).mean() < 0.02
    np.testing.assert_array_equal(saved["train_probs"].argmax(-1), probs.argmax(-1))


def test_cosine_learning_rate_decays_to_zero_at_the_last_step():
    from tfq_noise.train import learning_rate, learning_rate_sum

    config = RunConfig(**{**TINY, "lr_schedule": "cosine", "learning_rate": 0.01}, epochs=3)
    schedule = learning_rate(config, steps_per_epoch=10)
    values = np.array([float(schedule(step)) for step in range(30)])
    assert values[0] == pytest.approx(0.01) and values[15] == pytest.approx(0.005, rel=1e-5)
    assert values[-1] < 0.01 * 0.003 and np.all(np.diff(values) < 0)
    assert learning_rate_sum(config, 10) == pytest.approx(values.sum(), rel=1e-5)
    constant = RunConfig(**TINY, epochs=3)
    assert learning_rate(constant, 10) == constant.learning_rate
    assert learning_rate_sum(constant, 10) == pytest.approx(30 * constant.learning_rate)
    with pytest.raises(ValueError, match="lr_schedule"):
        RunConfig(**TINY, lr_schedule="step")


def test_training_mode_measurement_leaves_the_model_as_it_was(tiny_run_data):
    """BatchNorm's moving statistics (and every other non-trainable variable) are restored after the
    training-mode pass; on a fresh model the two modes really differ."""
    config = RunConfig(**TINY, epochs=1)
    data = tiny_run_data(config)
    model = build_run_model(config, data.input_shape, 10)
    before = [v.numpy().copy() for v in model.non_trainable_weights]
    assert before, "ResNet20 has BatchNorm moving statistics"
    images = data.train_images[:100]
    train_mode = callbacks.training_mode_logits(model, images, data.mean, data.std, batch_size=50)
    for variable, value in zip(model.non_trainable_weights, before):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.name)
    inference = predict_logits(model, images, data.mean, data.std)
    assert train_mode.shape == inference.shape and not np.allclose(train_mode, inference, atol=1e-3)
    # The same images in training mode, twice: the same logits (batch statistics, nothing carried over).
    again = callbacks.training_mode_logits(model, images, data.mean, data.std, batch_size=50)
    np.testing.assert_allclose(again, train_mode, rtol=1e-5, atol=1e-5)


def test_load_trained_model_gives_the_final_predictions(resumed):
    model, config, final = load_trained_model(resumed["run_dir"])
    assert config.run_name == resumed["config"].run_name and final == resumed["final"]
    data = resumed["data"]
    logits = predict_logits(model, data.test_images, data.mean, data.std)
    assert float(np.mean(logits.argmax(-1) == data.test_labels)) == pytest.approx(final["test_accuracy"], abs=1e-9)


def test_strip_optimizer_state_keeps_the_model(resumed, tmp_path):
    """A weights file with Adam's state (as ``save_weights`` writes it after training) loses only that state."""
    model, _, _ = load_trained_model(resumed["run_dir"])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    data = resumed["data"]
    model.train_on_batch(data.train_images[:8].astype("float32"), data.train_labels[:8])  # creates Adam's slots
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r") as weights:
        assert "optimizer" in weights
    size = path.stat().st_size
    assert strip_optimizer_state(path) and path.stat().st_size < size / 2
    assert not strip_optimizer_state(path) and sorted(p.name for p in tmp_path.iterdir()) == ["model.weights.h5"]
    again = build_run_model(resumed["config"], resumed["final"]["input_shape"], resumed["final"]["num_outputs"])
    again.load_weights(path)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_load_trained_model_refuses_unfinished_runs(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_trained_model(tmp_path / "missing")
    results.write_json(tmp_path / results.CONFIG, RunConfig(**TINY).to_dict())
    with pytest.raises(ValueError, match="not a finished run"):
        load_trained_model(tmp_path)


def test_kill_during_the_epoch_evaluation_loses_no_history_row(tmp_path, tiny_run_data, monkeypatch):
    config = RunConfig(**TINY, epochs=2)
    data = tiny_run_data(config)
    evaluate = callbacks.EpochEvaluation.on_epoch_end

    class Killed(Exception):
        pass

    def dies_in_epoch_0(self, epoch, logs=None):
        if epoch == 0:
            raise Killed  # leaves on disk what a kill during the evaluation leaves
        return evaluate(self, epoch, logs)

    monkeypatch.setattr(callbacks.EpochEvaluation, "on_epoch_end", dies_in_epoch_0)
    with pytest.raises(Killed):
        train(config, tmp_path, data=data, print_fn=quiet)
    monkeypatch.setattr(callbacks.EpochEvaluation, "on_epoch_end", evaluate)
    final = train(config, tmp_path, data=data, print_fn=quiet)
    assert [r["epoch"] for r in results.read_csv(tmp_path / results.HISTORY)] == [0, 1]
    assert final["epochs_trained"] == 2


# --------------------------------------------------------------------------------------
# NaN
# --------------------------------------------------------------------------------------


def test_nan_loss_stops_the_run_with_a_record(tmp_path, tiny_run_data):
    config = RunConfig(**TINY, epochs=3, learning_rate=1e30)
    with pytest.raises(RunFailed, match="non-finite loss"):
        train(config, tmp_path, data=tiny_run_data(config), print_fn=quiet)
    failed = results.read_json(tmp_path / results.FAILED)
    assert failed["reason"] == "non-finite loss"
    assert failed["epoch"] == 0 and failed["run"] == config.run_name
    assert failed["loss"] in ("nan", "inf", "-inf")  # strict JSON: a non-finite value is written as text
    assert not np.isfinite(float(failed["loss"]))
    assert failed["config"] == config.to_dict()
    assert not (tmp_path / results.FINAL).exists() and not (tmp_path / results.WEIGHTS).exists()
    assert results.run_state(tmp_path) == "failed"
    # It stopped at the first NaN instead of training the 3 epochs.
    assert len(results.read_csv(tmp_path / results.HISTORY)) <= 1


def test_retry_after_a_transient_nan_does_not_resume_from_the_diverged_weights(tmp_path, tiny_run_data,
                                                                                monkeypatch):
    config = RunConfig(**TINY, epochs=2)
    data = tiny_run_data(config)
    loss = tasks.ClassificationTask.loss
    monkeypatch.setattr(tasks.ClassificationTask, "loss",
                        lambda self, smoothing=0.0: (lambda y, p: loss(self, smoothing)(y, p) * float("nan")))
    with pytest.raises(RunFailed):
        train(config, tmp_path, data=data, print_fn=quiet)
    monkeypatch.setattr(tasks.ClassificationTask, "loss", loss)  # the cause is gone
    (tmp_path / results.FAILED).unlink()  # what --retry_failed does
    final = train(config, tmp_path, data=data, print_fn=quiet)
    assert np.isfinite(final["test_accuracy"])
    assert all(np.isfinite(r["loss"]) for r in results.read_csv(tmp_path / results.HISTORY))


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_release_memory_keeps_memory_steady():
    config = RunConfig(model_kwargs={"blocks_per_stage": 1, "base_filters": 8})
    x = np.zeros((4, 8, 8, 3), np.float32)

    def one_run():
        model = build_run_model(config, (8, 8, 3), 4)
        model(x, training=False)
        release_memory()

    one_run()  # warm-up: TensorFlow's own first-use allocations
    start = rss_mib()
    for _ in range(4):
        one_run()
    growth = rss_mib() - start
    assert growth < 64, f"RSS grew by {growth:.0f} MiB over 4 model builds"
    # release_memory cleared the Keras session: layer names start over.
    release_memory()
    assert keras.backend.get_uid("conv2d") == 1
