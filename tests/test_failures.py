"""Bad input and faults: each refused with one line that names the input, nothing half-written.

Covers the results layer (permissions, strict JSON, damaged files, run locks, stale temporary files),
the runner's checks (empty grids, an unusable results folder, every run's data found before the first
trains, failed runs not reported as done, Ctrl-C), divergence, typed settings and --help.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import tfq_noise  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
from absl import flags

from experiments import report
from experiments import run as runner
from tfq_noise import methods, results
from tfq_noise.callbacks import NanGuard
from tfq_noise.config import RunConfig, check_model_arguments

from test_runner import run_in_process  # noqa: E402  (tests/ is on the path: pytest puts it there)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE = REPO_ROOT / "experiments" / "configs" / "smoke.flags"
FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------- results files


def test_results_files_honour_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        results.write_json(tmp_path / "a.json", {"x": 1})
        results.write_csv(tmp_path / "h.csv", [{"epoch": 0}])
    finally:
        os.umask(previous)
    for name in ("a.json", "h.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_json_is_strict_even_with_nan(tmp_path):
    path = tmp_path / "failed.json"
    results.write_json(path, {"loss": float("nan"), "nested": [float("inf")], "ok": 1.5})

    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    data = json.loads(path.read_text(), parse_constant=refuse)  # a strict parser accepts it
    assert data == {"loss": "nan", "nested": ["inf"], "ok": 1.5}


def _finished_run(run_dir: Path, accuracy=0.5):
    results.write_json(run_dir / results.CONFIG, {"epochs": 1, "batch_size": 128, "learning_rate": 0.001})
    results.write_csv(run_dir / results.HISTORY, [{"epoch": 0, "loss": 2.0, "test_accuracy": accuracy}])
    results.write_json(run_dir / results.FINAL, {
        "dataset": "cifar10", "method": "baseline", "noise_type": "symmetric", "noise_rate": 0.4, "seed": 0,
        "hparams": {}, "epochs": 1, "test_accuracy": accuracy, "test_accuracy_last5": accuracy,
        "best_test_accuracy": accuracy, "wall_seconds": 1.0})


@pytest.mark.parametrize("damage", ["final", "config", "history_row", "history_binary"])
def test_a_damaged_run_is_named_and_the_report_is_not_written(damage, tmp_path, capsys):
    exp = tmp_path / "exp"
    _finished_run(exp / "good")
    bad = exp / "bad"
    _finished_run(bad)
    if damage == "final":
        (bad / results.FINAL).write_text('{"dataset": "cifar10", "meth')
    elif damage == "config":
        (bad / results.CONFIG).write_text("{")
    elif damage == "history_row":
        with open(bad / results.HISTORY, "a") as f:
            f.write("1,1.9\n")  # a row cut off by a kill
    else:
        (bad / results.HISTORY).write_bytes(b"epoch,loss\n\xff\xfe\x00,1\n")
    assert results.run_state(bad) == "damaged"
    assert results.run_state(exp / "good") == "done"
    with pytest.raises(results.DamagedFile, match=str(bad)):
        results.load_finals(exp)
    assert report.main([str(exp)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    assert not (exp / "summary.md").exists() and not (exp / "runs.csv").exists()  # nothing half-written


def test_run_locks(tmp_path):
    run_dir = tmp_path / "run"
    assert results.acquire_run_lock(run_dir) is None  # taken
    owner = results.acquire_run_lock(run_dir)  # this process already holds it: a second job would be refused
    assert owner == {"host": os.uname().nodename, "pid": os.getpid()}
    results.release_run_lock(run_dir)
    assert not (run_dir / results.LOCK).exists()
    # A live process elsewhere holds it: refused. Its process gone: stale, taken over.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (run_dir / results.LOCK).write_text(json.dumps({"host": os.uname().nodename, "pid": sleeper.pid}))
        assert results.acquire_run_lock(run_dir) == {"host": os.uname().nodename, "pid": sleeper.pid}
        results.release_run_lock(run_dir)  # not ours: left alone
        assert (run_dir / results.LOCK).exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert results.acquire_run_lock(run_dir) is None
    assert json.loads((run_dir / results.LOCK).read_text())["pid"] == os.getpid()
    results.release_run_lock(run_dir)
    # An empty lock (killed between creating and writing it) is stale too; another host's lock is respected.
    (run_dir / results.LOCK).write_text("")
    assert results.acquire_run_lock(run_dir) is None
    results.release_run_lock(run_dir)
    (run_dir / results.LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert results.acquire_run_lock(run_dir) == {"host": "elsewhere", "pid": 1}


def test_stale_temporaries_are_removed(tmp_path):
    results.write_json(tmp_path / "kept.json", {"a": 1})
    (tmp_path / f"{results.TEMP_PREFIX}final.json.abc.tmp").write_text("{")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f"{results.TEMP_PREFIX}summary.md.x.tmp").write_text("")
    assert results.remove_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["kept.json"]


def test_stale_temporaries_of_a_folder_another_job_holds_are_kept(tmp_path):
    """A fold run another job trains (``--only_folds``) is writing: its temporaries are not stale."""
    folds = tmp_path / results.FOLDS
    for name, owner in [("fold0", {"host": "elsewhere", "pid": 1}), ("fold1", None),
                        ("fold2", {"host": os.uname().nodename, "pid": os.getpid()})]:
        (folds / name / "checkpoints").mkdir(parents=True)
        (folds / name / "checkpoints" / f"{results.TEMP_PREFIX}history.csv.x.tmp").write_text("")
        if owner:
            (folds / name / results.LOCK).write_text(json.dumps(owner))
    assert results.remove_stale_temporaries(tmp_path) == 2  # fold1 (no lock) and fold2 (this process's)
    left = [p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob(f"{results.TEMP_PREFIX}*")]
    assert left == [(results.FOLDS, "fold0")]


# ----------------------------------------------------------------------------- the runner


@pytest.mark.parametrize("bad, message", [
    (["--noise_rates="], "--noise_rates is empty"),
    (["--seeds="], "--seeds is empty"),
    (["--methods="], "--methods is empty"),
    (["--model_kwargs=batchnorm=no"], "batchnorm='no' should be a bool"),
])
def test_empty_or_mistyped_flags_are_refused(bad, message, tmp_path, capsys):
    code, out, err = run_in_process([f"--flagfile={SMOKE}", f"--results_dir={tmp_path / 'r'}", *bad], capsys)
    assert code == 2 and message in err, out + err
    assert not (tmp_path / "r").exists()


def test_results_dir_that_is_a_file_or_read_only(tmp_path, capsys, cifar10_dir):
    a_file = tmp_path / "file"
    a_file.write_text("")
    code, out, err = run_in_process([f"--flagfile={SMOKE}", f"--results_dir={a_file}",
                                     f"--cifar10_dir={cifar10_dir}"], capsys)
    assert code == 2 and "is a file" in err, out + err
    if os.geteuid() != 0:  # root writes anywhere
        read_only = tmp_path / "ro"
        read_only.mkdir(mode=0o555)
        code, out, err = run_in_process([f"--flagfile={SMOKE}", f"--results_dir={read_only}",
                                         f"--cifar10_dir={cifar10_dir}"], capsys)
        assert code == 2 and "cannot write" in err


def test_every_runs_data_is_found_before_the_first_trains(tmp_path, capsys, cifar10_dir):
    """The symmetric run's data is there; the aggre run's CIFAR-10N file is not: nothing trains."""
    results_dir = tmp_path / "r"
    code, out, err = run_in_process([f"--flagfile={SMOKE}", f"--results_dir={results_dir}",
                                     f"--cifar10_dir={cifar10_dir}", "--methods=baseline",
                                     "--noise_type=symmetric,aggre", f"--cifar10n_path={tmp_path / 'none.pt'}"],
                                    capsys)
    assert code == 2 and "cannot load the data" in err and "aggre" in err, out + err
    assert not any(results_dir.rglob("*.json"))


def test_a_failed_run_is_not_reported_as_done(tmp_path, capsys):
    results_dir = tmp_path / "r"
    config_args = [f"--flagfile={SMOKE}", f"--results_dir={results_dir}", "--methods=baseline", "--report=false"]
    FLAGS.unparse_flags()
    FLAGS(["run", *config_args])
    (config,) = runner.build_grid()
    FLAGS.unparse_flags()
    results.write_json(results_dir / "smoke" / config.run_name / results.FAILED,
                       {"reason": "non-finite loss", "loss": float("nan")})
    code, out, err = run_in_process(config_args, capsys)
    assert code == 1, out + err
    assert "1 failed (use --retry_failed)" in out and "0 done" in out


def test_a_run_another_job_holds_is_skipped_and_left_alone(tmp_path, capsys, cifar10_dir):
    """Two jobs on one results folder: the run a live process holds is neither trained nor touched."""
    results_dir = tmp_path / "r"
    config_args = [f"--flagfile={SMOKE}", f"--results_dir={results_dir}", f"--cifar10_dir={cifar10_dir}",
                   "--methods=baseline", "--report=false"]
    FLAGS.unparse_flags()
    FLAGS(["run", *config_args])
    (config,) = runner.build_grid()
    FLAGS.unparse_flags()
    run_dir = results_dir / "smoke" / config.run_name
    run_dir.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / results.LOCK).write_text(json.dumps({"host": os.uname().nodename, "pid": other.pid}))
        code, out, err = run_in_process(config_args, capsys)
    finally:
        other.kill()
        other.wait()
    assert f"held by {os.uname().nodename} pid {other.pid}, skipped" in out, out + err
    assert "1 runs held by other jobs were skipped" in out
    assert sorted(p.name for p in run_dir.iterdir()) == [results.LOCK]  # nothing written beside the lock
    assert json.loads((run_dir / results.LOCK).read_text())["pid"] == other.pid  # the owner's lock kept
    assert code == 0


def test_ctrl_c_is_a_message_and_status_130(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "main", interrupted)
    assert runner._main_interruptible(["run"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" in err


def test_help_exits_0_and_names_what_it_knows():
    out = subprocess.run([sys.executable, "-m", "experiments.run", "--help"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("resnet20", "quantization", "early_stopping", "cifar10", "ferplus", "symmetric", "worst",
                 "--learning_rate", "Exit status"):
        assert name in out.stdout, name
    assert "cuInit" not in out.stderr and "absl::InitializeLog" not in out.stderr


# ----------------------------------------------------------------------------- training faults


class _Model:
    stop_training = False


def test_divergence_stops_the_run():
    guard = NanGuard()
    guard.set_model(_Model())
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(0, {"loss": 2.3})
    guard.on_epoch_end(0, {"loss": 2.0})
    assert guard.failure is None
    guard.on_epoch_end(1, {"loss": 24.0})  # over 10 × 2.3
    assert guard.failure["reason"].startswith("diverged") and guard.model.stop_training
    resumed = NanGuard(reference_loss=2.0)
    resumed.set_model(_Model())
    resumed.on_epoch_end(3, {"loss": 19.0})
    assert resumed.failure is None


@pytest.mark.parametrize("hparams, message", [
    ({"ema_momentum": "x"}, "ema_momentum must be a number"),
    ({"weight_bits": None}, "weight_bits must be an integer"),
    ({"weight_bits": [4]}, "weight_bits must be an integer"),
    ({"activation_bits": "x"}, "activation_bits must be an integer"),
])
def test_mistyped_method_settings_name_the_setting(hparams, message):
    with pytest.raises(ValueError, match=message):
        methods.resolve("quantization", hparams)


def test_model_arguments_are_typed():
    check_model_arguments("resnet20", {"batchnorm": False, "blocks_per_stage": 1})
    with pytest.raises(ValueError, match="should be a int"):
        check_model_arguments("resnet20", {"blocks_per_stage": 1.5})
    with pytest.raises(ValueError, match="true or false"):
        RunConfig(model_kwargs={"batchnorm": "no"})


def test_benchmark_refuses_a_file_that_is_not_a_model(tmp_path, capsys):
    from tfq_noise.deploy import benchmark

    not_a_model = tmp_path / "model.tflite"
    not_a_model.write_text("hello")
    assert benchmark.main([str(not_a_model)]) == 2
    err = capsys.readouterr().err
    assert "is not a TFLite model" in err and str(not_a_model) in err
    assert benchmark.main([str(tmp_path / "missing.tflite")]) == 2
    assert not (tmp_path / "benchmark.json").exists()


def test_export_refuses_truncated_weights(tmp_path, capsys, cifar10_dir):
    from tfq_noise.deploy import export

    run_dir = tmp_path / "run"
    config = RunConfig(experiment="t", model_kwargs={"blocks_per_stage": 1}, train_size=300)
    results.write_json(run_dir / results.CONFIG, config.to_dict())
    results.write_json(run_dir / results.FINAL, {"input_shape": [32, 32, 3], "num_outputs": 10,
                                                 "normalization": {"mean": [125.0] * 3, "std": [60.0] * 3},
                                                 "test_accuracy": 0.5, "method": "baseline"})
    (run_dir / results.WEIGHTS).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)  # an h5 cut off after its header
    assert export.main([f"--run_dir={run_dir}", f"--output={tmp_path / 'm.tflite'}",
                        f"--cifar10_dir={cifar10_dir}"]) == 1
    err = capsys.readouterr().err
    assert "export failed" in err and str(run_dir) in err and "Traceback" not in err
    assert not (tmp_path / "m.tflite").exists()
