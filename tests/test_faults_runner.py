"""Fault injection at smoke size: each fault of docs/reliability.md, made to happen, and what the runner and
the training loop do about it.

Checkpoints cut in half or lost to a full disk (the run resumes from its last good epoch, or from scratch,
saying so), Ctrl-C during start-up and SIGTERM mid-epoch (one line, exit 130 / 143, nothing half-written),
flags absl refuses (one ``error:`` line, exit 2), settings refused before anything runs, damaged history
files, TFDS without a network (fails in seconds, saying how to give the offline copy), runs too small to
mean anything, finished grids, and the size of a run's predictions.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import tfq_noise  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from experiments import run as runner
from tfq_noise import callbacks, results
from tfq_noise.config import RunConfig
from tfq_noise.data import cifar10
from tfq_noise.train import few_steps_warnings, train

from test_runner import run_in_process  # noqa: E402  (tests/ is on the path: pytest puts it there)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE = REPO_ROOT / "experiments" / "configs" / "smoke.flags"
FLAGS = flags.FLAGS
TINY = dict(experiment="test", model_kwargs={"blocks_per_stage": 1}, train_size=300, batch_size=64,
            eval_train_size=64, noise_rate=0.4)


class Lines(list):
    def __call__(self, text, **kwargs):
        self.append(text)


class Killed(Exception):
    """Stands for a kill: raised as an epoch begins, after the previous one's callbacks all ran."""


def kill_at_epoch(monkeypatch, epoch: int):
    begin = callbacks.ProgressPrinter.on_epoch_begin

    def on_epoch_begin(self, e, logs=None):
        if e == epoch:
            raise Killed
        begin(self, e, logs)

    monkeypatch.setattr(callbacks.ProgressPrinter, "on_epoch_begin", on_epoch_begin)
    return lambda: monkeypatch.setattr(callbacks.ProgressPrinter, "on_epoch_begin", begin)


def backup_files(run_dir: Path) -> list[str]:
    folder = callbacks.backup_folder(run_dir / results.CHECKPOINTS / "backup")
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def killed(tmp_path_factory, tiny_run_data):
    """A 3-epoch run killed as its third epoch begins: two epoch backups on disk."""
    config = RunConfig(**TINY, epochs=3)
    data = tiny_run_data(config)
    run_dir = tmp_path_factory.mktemp("killed") / config.run_name
    patch = pytest.MonkeyPatch()
    restore = kill_at_epoch(patch, 2)
    try:
        with pytest.raises(Killed):
            train(config, run_dir, data=data, print_fn=Lines())
    finally:
        restore()
        patch.undo()
    return config, data, run_dir


def test_the_last_two_epoch_backups_are_kept(killed):
    _, _, run_dir = killed
    assert [n for n in backup_files(run_dir) if n.endswith(".index")] == ["ckpt-1.index", "ckpt-2.index"]
    epoch, notes = callbacks.check_backups(run_dir / results.CHECKPOINTS / "backup")
    assert (epoch, notes) == (1, [])  # the last one, epoch 2 (0-based 1), is good


@pytest.mark.parametrize("damage", ["index", "data"])
def test_a_checkpoint_cut_in_half_is_named_and_the_run_resumes_from_the_one_before(damage, killed, tmp_path):
    config, data, original = killed
    run_dir = tmp_path / config.run_name
    shutil.copytree(original, run_dir)
    folder = callbacks.backup_folder(run_dir / results.CHECKPOINTS / "backup")
    damaged = folder / ("ckpt-2.index" if damage == "index" else "ckpt-2.data-00000-of-00001")
    cut_in_half(damaged)  # "not an sstable" (index) or a short read (data): the run was stuck for good
    lines = Lines()
    final = train(config, run_dir, data=data, print_fn=lines)
    text = "\n".join(lines)
    assert f"checkpoint {folder / 'ckpt-2'} is damaged" in text and "removed" in text, text
    assert "resuming after epoch 1, the last good one" in text
    assert [line.split("] ")[1].split(" (")[0] for line in lines if "] epoch " in line] == ["epoch 2/3", "epoch 3/3"]
    assert [r["epoch"] for r in results.read_history(run_dir / results.HISTORY)] == [0, 1, 2]
    assert final["epochs_trained"] == 3 and results.run_state(run_dir) == "done"


def test_with_every_checkpoint_damaged_the_run_starts_again_from_scratch(killed, tmp_path):
    config, data, original = killed
    run_dir = tmp_path / config.run_name
    shutil.copytree(original, run_dir)
    folder = callbacks.backup_folder(run_dir / results.CHECKPOINTS / "backup")
    for name in ("ckpt-1.index", "ckpt-2.index"):
        cut_in_half(folder / name)
    (folder / callbacks.BACKUP_STATE).write_text("model_checkpoint_pa")  # TensorFlow's list cut too
    lines = Lines()
    final = train(config, run_dir, data=data, print_fn=lines)
    text = "\n".join(lines)
    assert text.count("is damaged") == 2 and "no good checkpoint left: training from scratch" in text, text
    assert [line.split("] ")[1].split(" (")[0] for line in lines if "] epoch " in line] == [
        "epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert [r["epoch"] for r in results.read_history(run_dir / results.HISTORY)] == [0, 1, 2]
    assert final["epochs_trained"] == 3


def test_a_disk_full_during_a_checkpoint_save_leaves_a_resumable_run(tmp_path, tiny_run_data, monkeypatch):
    config = RunConfig(**TINY, epochs=3)
    data = tiny_run_data(config)
    save = tf.train.CheckpointManager.save
    calls = []

    def disk_full_on_second_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, *args, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", disk_full_on_second_save)
    with pytest.raises(OSError, match="No space left"):
        train(config, tmp_path, data=data, print_fn=Lines())
    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)  # space freed
    assert results.run_state(tmp_path) == "partial"
    assert not list(tmp_path.rglob(f"{results.TEMP_PREFIX}*"))
    # Epoch 2's history row was written, its backup was not: the run resumes after epoch 1, redoing epoch 2.
    lines = Lines()
    final = train(config, tmp_path, data=data, print_fn=lines)
    assert [line.split("] ")[1].split(" (")[0] for line in lines if "] epoch " in line] == ["epoch 2/3", "epoch 3/3"]
    assert [r["epoch"] for r in results.read_history(tmp_path / results.HISTORY)] == [0, 1, 2]
    assert final["epochs_trained"] == 3 and results.run_state(tmp_path) == "done"
    # The run is too small to mean anything: said when it starts and kept in final.json.
    assert final["warnings"] and "training steps" in final["warnings"][0]
    assert any("warning: only 15 training steps" in line for line in lines), lines
    assert results.read_json(tmp_path / results.FINAL)["warnings"] == final["warnings"]


def test_the_runner_stops_on_a_full_disk_with_one_line_and_status_1(tmp_path, cifar10_dir, capsys, monkeypatch):
    import tfq_noise.train

    def disk_full(config, run_dir, *args, **kwargs):
        (Path(run_dir) / results.HISTORY).parent.mkdir(parents=True, exist_ok=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir / "checkpoints"))

    monkeypatch.setattr(tfq_noise.train, "train", disk_full)
    results_dir = tmp_path / "r"
    code, out, err = run_in_process([f"--flagfile={SMOKE}", f"--results_dir={results_dir}", "--report=false",
                                     f"--cifar10_dir={cifar10_dir}"], capsys)
    assert code == 1, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "No space left on device" in lines[0], err
    assert "run the same command again" in lines[0] and "Traceback" not in err
    assert "[2/2]" not in out  # the grid stops: the next run would hit the same disk
    assert not list(results_dir.rglob(results.LOCK))


# ----------------------------------------------------------------------------- signals


def _child(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_ctrl_c_during_start_up_is_one_line_and_status_130(tmp_path):
    """SIGINT while TensorFlow is being imported (the first seconds of every command)."""
    script = textwrap.dedent("""
        import os, runpy, signal, sys

        class InterruptTheImport:
            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow":
                    sys.meta_path.remove(self)
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        # Ctrl-C's default action, whatever this test's caller set (a shell's background job ignores SIGINT).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.meta_path.insert(0, InterruptTheImport())
        sys.argv = ["experiments.run", "--results_dir=" + sys.argv[1]]
        runpy.run_module("experiments.run", run_name="__main__", alter_sys=True)
    """)
    child = _child(["-c", script, str(tmp_path / "r")])
    out, err = child.communicate(timeout=300)
    assert child.returncode == 130, err[-3000:]
    assert err.strip().splitlines() == ["interrupted: finished epochs are kept; run the same command again to resume"]
    assert not (tmp_path / "r").exists()


def test_sigterm_mid_epoch_is_one_line_status_143_and_a_resumable_run(tmp_path, cifar10_dir):
    results_dir = tmp_path / "r"
    child = _child(["-m", "experiments.run", f"--flagfile={SMOKE}", f"--results_dir={results_dir}",
                    f"--cifar10_dir={cifar10_dir}", "--methods=baseline", "--epochs=4", "--report=false"])
    deadline = time.time() + 400
    # The first epoch's backup is complete once TensorFlow lists it: the second epoch has begun.
    while not list(results_dir.glob(f"smoke/*/{results.CHECKPOINTS}/backup/chief/{callbacks.BACKUP_STATE}")):
        assert child.poll() is None and time.time() < deadline, child.communicate()[1][-3000:]
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == ("interrupted by SIGTERM: finished epochs are kept; run the same command "
                                            "again to resume")
    assert "Traceback" not in err
    (run_dir,) = (results_dir / "smoke").iterdir()
    assert results.run_state(run_dir) == "partial"
    assert not (run_dir / results.LOCK).exists() and not list(run_dir.rglob(f"{results.TEMP_PREFIX}*"))
    epoch, notes = callbacks.check_backups(run_dir / results.CHECKPOINTS / "backup")
    assert notes == [] and epoch is not None and epoch >= 0  # a good backup to resume from
    assert [r["epoch"] for r in results.read_history(run_dir / results.HISTORY)][: epoch + 1] == list(range(epoch + 1))


def test_sigterm_and_ctrl_c_inside_main_give_143_and_130(monkeypatch, capsys):
    for error, code in ((runner.Terminated(), 143), (KeyboardInterrupt(), 130)):
        def stopped(argv, error=error):
            raise error

        monkeypatch.setattr(runner, "main", stopped)
        assert runner._main_interruptible(["run"]) == code
        err = capsys.readouterr().err.strip()
        assert err.startswith("interrupted") and err.endswith("run the same command again to resume")


# ----------------------------------------------------------------------------- flags


@pytest.mark.parametrize("bad, message", [
    ("--threads=-2", "error: flag --threads=-2: -2 is not a non-negative integer"),
    ("--logical_cpus=-1", "error: flag --logical_cpus=-1"),
    ("--bogus=1", "error: Unknown command line flag 'bogus'"),
    ("--epochs=abc", "error: flag --epochs=abc"),
])
def test_flags_absl_refuses_are_one_error_line_and_status_2(bad, message, capsys):
    FLAGS.unparse_flags()
    try:
        with pytest.raises(SystemExit) as exit_info:
            runner.parse_flags(["run", bad])
    finally:
        FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_a_flag_error_through_the_command_is_one_line_and_status_2(tmp_path):
    child = _child(["-m", "experiments.run", "--threads=-2", f"--results_dir={tmp_path / 'r'}"])
    out, err = child.communicate(timeout=300)
    assert child.returncode == 2, err[-3000:]
    assert err.strip().splitlines() == [
        "error: flag --threads=-2: -2 is not a non-negative integer (python -m experiments.run --help lists the flags)"]
    assert "FATAL" not in err and not (tmp_path / "r").exists()


def test_an_extra_argument_is_one_line_not_the_help(tmp_path, capsys):
    FLAGS.unparse_flags()
    FLAGS(["run", f"--results_dir={tmp_path / 'r'}"])
    try:
        code = runner.main(["run", "extra"])
    finally:
        FLAGS.unparse_flags()
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip().splitlines() == [
        "error: unexpected argument(s) extra: every setting is a flag, --name=value (python -m experiments.run "
        "--help lists them)"]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("bad, message", [
    ("--model_kwargs=blocks_per_stage=0", "blocks_per_stage=0: must be >= 1"),
    ("--dataset_kwargs=bogus=1", "dataset_kwargs bogus: not an option of cifar10 (it takes none)"),
])
def test_settings_that_would_train_nonsense_are_refused(bad, message, tmp_path, capsys):
    code, out, err = run_in_process([f"--flagfile={SMOKE}", f"--results_dir={tmp_path / 'r'}", bad], capsys)
    assert code == 2 and err.startswith("error:") and message in err, out + err
    assert not (tmp_path / "r").exists()


def test_unknown_dataset_kwargs_name_the_accepted_ones():
    with pytest.raises(ValueError, match=r"not an option of folder \(it takes channels, image_size, test_fraction\)"):
        RunConfig(dataset="folder", noise_type="original", dataset_kwargs={"bogus": 1})
    RunConfig(dataset="folder", noise_type="original", dataset_kwargs={"image_size": 48})  # a real one


# ----------------------------------------------------------------------------- damaged runs


def _finished(run_dir: Path, config: RunConfig, history: str | None = None) -> None:
    results.write_json(run_dir / results.CONFIG, config.to_dict())
    text = history or "epoch,loss,test_accuracy\n0,2.0,0.3\n1,1.9,0.35\n"
    (run_dir / results.HISTORY).write_text(text)
    results.write_json(run_dir / results.FINAL, {
        "dataset": "cifar10", "method": config.method, "noise_type": "symmetric", "noise_rate": 0.4, "seed": 0,
        "hparams": config.resolved_hparams, "epochs": 2, "epochs_trained": 2, "test_accuracy": 0.35,
        "test_accuracy_last5": 0.33, "best_test_accuracy": 0.35, "wall_seconds": 1.0})


@pytest.mark.parametrize("history, why", [
    ("epoch,loss,test_acc", "it holds 0 epochs"),  # cut inside its header
    ("epo", "no epoch column"),
    ("epoch,loss,test_accuracy\n0,2.0,0.3\n1,abc,0.35\n", "loss='abc'"),
    ("epoch,loss,test_accuracy\n0,2.0,0.3\n3,1.9,0.35\n", "expected 1"),
])
def test_a_damaged_history_makes_a_finished_run_damaged(history, why, tmp_path, capsys):
    args = [f"--flagfile={SMOKE}", f"--results_dir={tmp_path / 'r'}", "--methods=baseline", "--report=false"]
    FLAGS.unparse_flags()
    FLAGS(["run", *args])
    (config,) = runner.build_grid()
    FLAGS.unparse_flags()
    run_dir = tmp_path / "r" / "smoke" / config.run_name
    _finished(run_dir, config, history)
    assert results.run_state(run_dir) == "damaged"
    with pytest.raises(results.DamagedFile, match=why):
        results.load_finals(run_dir.parent)  # what the report reads: it names the run and stops
    code, out, err = run_in_process([*args, "--dry_run"], capsys)
    assert code == 0 and "1 damaged (trained again), 1 to run" in out and "damaged" in out, out + err


def test_a_final_json_that_is_not_a_summary_is_damaged(tmp_path):
    config = RunConfig(**TINY)
    _finished(tmp_path, config)
    assert results.run_state(tmp_path) == "done"
    results.write_json(tmp_path / results.FINAL, {"test_accuracy": "high"})
    assert results.run_state(tmp_path) == "damaged"
    with pytest.raises(results.DamagedFile, match="not a run summary: dataset missing"):
        results.read_final(tmp_path / results.FINAL)


def test_a_finished_grid_says_so_and_how_to_train_again(tmp_path, capsys):
    args = [f"--flagfile={SMOKE}", f"--results_dir={tmp_path / 'r'}", "--methods=baseline", "--report=false"]
    FLAGS.unparse_flags()
    FLAGS(["run", *args])
    (config,) = runner.build_grid()
    FLAGS.unparse_flags()
    _finished(tmp_path / "r" / "smoke" / config.run_name, config)
    code, out, err = run_in_process(args, capsys)
    assert code == 0, err
    assert "1 done, 0 to run" in out and "every run is already finished in" in out
    assert "another --results_dir or --experiment, or delete their folders" in out


# ----------------------------------------------------------------------------- first contact without a network


def test_tfds_without_a_network_fails_in_seconds_saying_how_to_give_the_offline_copy(tmp_path, capsys, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.delenv(cifar10.ENV_VAR, raising=False)
    monkeypatch.setattr(cifar10, "download_host_problem", lambda timeout=cifar10.PROBE_SECONDS:
                        "cannot connect to www.cs.toronto.edu:443 ([Errno -3] Temporary failure in name resolution)")

    def no_download(*args, **kwargs):
        raise AssertionError("TFDS was asked to download")

    monkeypatch.setattr(tfds, "load", no_download)
    start = time.time()
    code, out, err = run_in_process([f"--flagfile={SMOKE}", f"--results_dir={tmp_path / 'r'}",
                                     f"--tfds_data_dir={tmp_path / 'tfds'}"], capsys)
    assert time.time() - start < 10
    assert code == 2, out + err
    (line,) = err.strip().splitlines()
    assert "TFDS cannot download it: cannot connect to www.cs.toronto.edu:443" in line
    assert "--cifar10_dir=DIR" in line and "TFQ_NOISE_CIFAR10_DIR=DIR" in line
    shared = Path(os.environ.get("TFQ_NOISE_SHARED_DATASETS") or REPO_ROOT.parent / "shared" / "datasets")
    if (shared / "cifar10" / "materialize.py").is_file():
        assert "cifar10/materialize.py DIR" in line
    assert not (tmp_path / "r").exists()


def test_the_download_probe_answers_within_its_timeout(monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.setattr(cifar10, "DOWNLOAD_HOST", ("127.0.0.1", port))
    assert cifar10.download_host_problem(timeout=2).startswith(f"cannot connect to 127.0.0.1:{port}")

    def hangs(*args, **kwargs):  # a network that drops packets (or a name server that never answers)
        time.sleep(5)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", hangs)
    start = time.time()
    assert cifar10.download_host_problem(timeout=1) == f"127.0.0.1:{port} did not answer within 1 s"
    assert time.time() - start < 3


# ----------------------------------------------------------------------------- too small to mean anything


def test_a_run_too_small_for_its_batch_is_warned_about():
    (warning,) = few_steps_warnings(43, 128, 20)  # the folder command of docs/results/your_data.md on 43 images
    assert "43 training examples are fewer than one batch of 128: one step an epoch, 20 in all" in warning
    assert "lower --batch_size" in warning
    (warning,) = few_steps_warnings(540, 128, 2)  # the smoke grid
    assert warning.startswith("only 10 training steps (5 an epoch x 2 epochs")
    assert few_steps_warnings(45_000, 128, 20) == [] and few_steps_warnings(1000, 64, 30) == []


# ----------------------------------------------------------------------------- predictions


def _real_size_predictions(seed=0):
    """Arrays shaped as a 45,000 / 5,000 CIFAR-10 run's, probabilities as spread as a noisy-label model's: they
    code to 295 KB, about the largest of the committed real-size runs (296 KB, the baseline at 80% noise)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n, offset in (("train", 45_000, 0), ("val", 5_000, 45_000)):
        labels = rng.integers(0, 10, n)
        logits = rng.normal(0.0, 1.5, (n, 10))
        logits[np.arange(n), labels] += rng.gamma(1.0, 1.0, n)  # mean largest probability 0.46, as that run's
        probs = np.exp(logits)
        arrays[f"{split}_probs"] = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_index"] = np.sort(rng.permutation(50_000)[:n]) if split == "train" else np.arange(offset, offset + n) % 50_000
    clean = arrays["train_labels"].copy()
    flip = rng.random(45_000) < 0.8
    clean[flip] = (clean[flip] + rng.integers(1, 10, flip.sum())) % 10
    arrays["train_clean_labels"], arrays["train_corrupted"] = clean, clean != arrays["train_labels"]
    return arrays


def test_a_real_size_runs_predictions_take_under_300_kb_and_read_back(tmp_path):
    arrays = _real_size_predictions()
    path = tmp_path / results.PREDICTIONS
    results.write_predictions(path, arrays)
    assert path.stat().st_size < 300_000, path.stat().st_size
    saved = results.read_npz(path)
    assert set(saved) == set(arrays)
    for key in ("train_labels", "train_clean_labels", "train_corrupted", "train_index", "val_labels", "val_index"):
        np.testing.assert_array_equal(saved[key], arrays[key], err_msg=key)
        assert saved[key].dtype == (bool if key == "train_corrupted" else np.int64), key
    for split in ("train", "val"):
        probs, back = arrays[f"{split}_probs"].astype(np.float64), saved[f"{split}_probs"]
        assert back.dtype == np.float16 and back.shape == probs.shape
        np.testing.assert_array_equal(back.argmax(1), probs.argmax(1))  # the predicted class is kept exactly
        error = np.abs(back.astype(np.float64) - probs)
        assert error.mean() < 0.01 and error.max() < 0.1
        np.testing.assert_allclose(back.astype(np.float64).sum(1), 1.0, atol=2e-3)
    exact = tmp_path / "fold.npz"  # a cleanlab fold: its held-out split is read back by the method, as float16
    results.write_predictions(exact, arrays, exact=("val",))
    np.testing.assert_array_equal(results.read_npz(exact)["val_probs"], arrays["val_probs"].astype(np.float16))


def test_predictions_written_before_still_read(tmp_path):
    arrays = {"train_probs": np.full((4, 3), 1 / 3, np.float16), "train_labels": np.arange(4) % 3,
              "test_probs": np.eye(3, dtype=np.float16), "train_index": np.arange(4, dtype=np.int64)}
    results.write_npz(tmp_path / results.PREDICTIONS, arrays)  # the layout of the committed files
    saved = results.read_npz(tmp_path / results.PREDICTIONS)
    assert set(saved) == set(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(saved[key], value)
        assert saved[key].dtype == value.dtype


def test_multi_label_probabilities_are_not_renormalized(tmp_path):
    sigmoid = np.array([[0.9, 0.8, 0.05], [0.1, 0.2, 0.95]], np.float32)
    results.write_predictions(tmp_path / "p.npz", {"train_probs": sigmoid}, softmax=False)
    np.testing.assert_allclose(results.read_npz(tmp_path / "p.npz")["train_probs"], sigmoid, atol=0.03)

