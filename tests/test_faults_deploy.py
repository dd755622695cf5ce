"""Bad input and faults of the deploy commands (export, benchmark): one ``error: ...`` line, the documented exit
code (2 bad input, nothing written; 1 a failed operation), no traceback, checked before the expensive work; and
the export's accuracy tolerance, which counts test images."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
from tfq_noise import results
from tfq_noise.config import RunConfig
from tfq_noise.deploy import benchmark, checks, export, verify, writer

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = REPO_ROOT / "tflite_models"
INT8 = MODELS / "resnet20_n45k_s40_baseline_ptq_int8.tflite"
FLOAT = MODELS / "resnet20_n45k_s40_baseline_float32.tflite"
QUICK = ["--runs=3", "--warmup_runs=0", "--batch=1", "--threads=1"]


def one_error_line(capsys, *needles) -> str:
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def no_timing(monkeypatch):
    """Fails the test if a model is timed (the check must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was timed before the input was checked")

    monkeypatch.setattr(benchmark, "run_worker", refuse)


# ----------------------------------------------------------------------------- benchmark


@pytest.fixture()
def damaged(tmp_path):
    """Copies of a committed model: truncated, header bit flipped, a weight bit flipped (with and without a
    report recording the file's SHA-256)."""
    data = INT8.read_bytes()
    out = {"truncated": tmp_path / "truncated.tflite", "header": tmp_path / "header.tflite",
           "weight": tmp_path / "weight.tflite", "weight_unrecorded": tmp_path / "weight_unrecorded.tflite"}
    out["truncated"].write_bytes(data[:100_000])
    flipped = bytearray(data)
    flipped[20] ^= 0xFF
    out["header"].write_bytes(bytes(flipped))
    flipped = bytearray(data)
    flipped[150_000] ^= 0x10  # inside a weight buffer: the flatbuffer stays valid
    out["weight"].write_bytes(bytes(flipped))
    out["weight_unrecorded"].write_bytes(bytes(flipped))
    report = json.loads(Path(str(INT8) + ".json").read_text())
    for name in ("truncated", "weight"):  # the report of the good file, with its digest
        Path(str(out[name]) + ".json").write_text(json.dumps({**report, "sha256": checks.sha256_file(INT8)}))
    return out


@pytest.mark.parametrize("case, message", [
    ("truncated", "is 100,000 bytes but its export report"),
    ("header", "is damaged or not a model LiteRT can run (ValueError: The model is not a valid Flatbuffer buffer)"),
    ("weight", "differs from the file its export report truncated"),
])
def test_benchmark_refuses_damaged_models(damaged, case, message, tmp_path, capsys, monkeypatch):
    no_timing(monkeypatch)
    output = tmp_path / "bench.json"
    assert benchmark.main([str(damaged[case]), f"--output={output}", *QUICK]) == 2
    one_error_line(capsys, str(damaged[case]), message.replace("truncated", "weight.tflite.json"))
    assert not output.exists()


def test_a_flipped_weight_without_a_recorded_digest_cannot_be_seen(damaged, capsys):
    # Documented limit: without the SHA-256 in its report (files exported before it was recorded), a flipped
    # weight bit leaves a valid model: LiteRT loads and runs it.
    assert checks.check_model(damaged["weight_unrecorded"])["input"]["dtype"] == "int8"


@pytest.mark.parametrize("flag, message", [
    ("--threads=0", "argument --threads: must be >= 1, got 0"),
    ("--threads=-2", "argument --threads: must be >= 1, got -2"),
    ("--threads=1,x", "argument --threads: expected an integer >= 1, got 'x'"),
    ("--threads=", "argument --threads: expected a comma-separated list"),
    ("--runs=0", "argument --runs: must be >= 1, got 0"),
    ("--batch=0", "argument --batch: must be >= 1"),
    ("--rounds=0", "argument --rounds: must be >= 1"),
    ("--warmup_runs=-1", "argument --warmup_runs: must be >= 0"),
])
def test_benchmark_refuses_bad_settings(flag, message, tmp_path, capsys, monkeypatch):
    no_timing(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main([str(INT8), flag, f"--output={tmp_path / 'b.json'}"])
    assert exit_info.value.code == 2
    one_error_line(capsys, message, "(see --help)")
    assert not list(tmp_path.iterdir())


def test_benchmark_function_refuses_thread_counts_litert_would_abort_on():
    for settings in ({"threads": [0]}, {"threads": [-2]}, {"runs": 0}, {"rounds": 0}):
        with pytest.raises(checks.InputError, match="bad benchmark settings"):
            benchmark.benchmark([INT8], **settings)
    from tfq_noise.deploy.bench_worker import measure

    with pytest.raises(ValueError, match="threads must be >= 1"):  # the worker refuses too, in words
        measure(str(INT8), [0], 0, 1, 1, 0)


def test_benchmark_threads_zero_on_the_command_line_is_not_a_crash():
    """Before: LiteRT's C++ 'Check failed: num_threads >= 1' aborted the worker (exit 134)."""
    proc = subprocess.run([sys.executable, "-m", "tfq_noise.deploy.benchmark", str(INT8), "--threads=0"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "--threads: must be >= 1" in proc.stderr


def _unwritable(monkeypatch, folder: Path):
    """mkstemp in ``folder`` fails as on a read-only file system (root may write anywhere on a writable one)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # noqa: A002  (tempfile's name)
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_benchmark_output_that_cannot_be_written_is_refused_first(tmp_path, capsys, monkeypatch):
    no_timing(monkeypatch)
    folder = tmp_path / "ro"
    folder.mkdir()
    _unwritable(monkeypatch, folder)
    assert benchmark.main([str(INT8), f"--output={folder / 'b.json'}", *QUICK]) == 2
    one_error_line(capsys, "cannot write in", "Read-only file system", "choose a writable folder for --output")
    (tmp_path / "file").write_text("x")
    assert benchmark.main([str(INT8), f"--output={tmp_path / 'file' / 'b.json'}", *QUICK]) == 2
    one_error_line(capsys, "is a file, not a folder")
    assert benchmark.main([str(INT8), f"--output={tmp_path}", *QUICK]) == 2
    one_error_line(capsys, "is a folder: give a file name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ro"] and not list(folder.iterdir())


def _really_unwritable() -> Path | None:
    """A folder this process cannot create files in, if the machine has one (not as root: /sys, often)."""
    for candidate in [Path("/sys"), Path("/proc/self")]:
        try:
            fd, name = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(fd)
        os.unlink(name)
    return None


def test_benchmark_output_in_a_real_unwritable_folder(capsys, monkeypatch):
    folder = _really_unwritable()
    if folder is None:
        pytest.skip("no unwritable folder on this machine")
    no_timing(monkeypatch)
    assert benchmark.main([str(INT8), f"--output={folder / 'bench.json'}", *QUICK]) == 2
    one_error_line(capsys, f"cannot write in {folder}")


def test_benchmark_report_write_failing_midway_leaves_nothing(tmp_path, capsys, monkeypatch):
    def full_disk(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(results, "atomic_write_text", full_disk)
    output = tmp_path / "b.json"
    assert benchmark.main([str(INT8), f"--output={output}", *QUICK]) == 1
    one_error_line(capsys, f"cannot write the report to {output}", "No space left on device")
    assert not list(tmp_path.iterdir())


def test_benchmark_says_what_is_missing_and_judges_resnet20_only(tmp_path, capsys):
    assert benchmark.main([str(INT8), *QUICK, f"--output={tmp_path / 'alone.json'}"]) == 0
    out = capsys.readouterr().out
    assert " - " not in out and "no float32" in out
    assert "no int8/float32 ratios: no float32 model of the same architecture was given" in out
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert alone["comparisons"] == [] and alone["not_compared"][0]["model"] == INT8.name
    assert benchmark.main([str(FLOAT), str(INT8), *QUICK, f"--output={tmp_path / 'pair.json'}"]) == 0
    out = capsys.readouterr().out
    (pair,) = json.loads((tmp_path / "pair.json").read_text())["comparisons"]
    assert pair["network"] == "ResNet20" and pair["size_target"]["met"] == (pair["size_ratio"] <= 0.28)
    assert pair["size_ratio"] == pytest.approx(INT8.stat().st_size / FLOAT.stat().st_size)
    assert "targets for ResNet20" in out
    # A ResNet8 pair (same files, reports saying blocks_per_stage=1): ratios, no ResNet20 target.
    for model in (FLOAT, INT8):
        shutil.copy(model, tmp_path / model.name)
        report = json.loads(Path(str(model) + ".json").read_text())
        report["source"]["model_kwargs"] = {"blocks_per_stage": 1}
        Path(str(tmp_path / model.name) + ".json").write_text(json.dumps(report))
    assert benchmark.main([str(tmp_path / FLOAT.name), str(tmp_path / INT8.name), *QUICK]) == 0
    out = capsys.readouterr().out
    assert "no target: the targets are set for ResNet20; this is ResNet8" in out and "MISS" not in out


def test_benchmark_and_export_help_show_the_defaults(capsys):
    for main, defaults in ((benchmark.main, ["(default: 1,2)", "(default: 500)", "(default: 50)", "(default: 32)"]),
                           (export.main, ["(default: 0.3)", "(default: 10)", "(default: 1.0)", "(default: 500)",
                                          "(default: 32)", "(default: auto)", "(default: int8)"])):
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for default in defaults:
            assert default in text, (main.__module__, default)


# ----------------------------------------------------------------------------- export


@pytest.fixture()
def fake_run(tmp_path):
    """A finished run's files, with weights that cannot be read: any check after them would say so."""
    config = RunConfig(experiment="t", model_kwargs={"blocks_per_stage": 1}, train_size=300)
    run_dir = tmp_path / "t" / config.run_name
    results.write_json(run_dir / results.CONFIG, config.to_dict())
    results.write_json(run_dir / results.FINAL, {"input_shape": [32, 32, 3], "num_outputs": 10, "method": "baseline",
                                                 "normalization": {"mean": [125.0] * 3, "std": [60.0] * 3}})
    (run_dir / results.WEIGHTS).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    return run_dir


@pytest.mark.parametrize("flag, message", [
    ("--eval_images=-5", "argument --eval_images: must be >= 0, got -5"),
    ("--tolerance_points=-1", "argument --tolerance_points: must be a finite number >= 0"),
    ("--tolerance_points=nan", "argument --tolerance_points: must be a finite number >= 0"),
    ("--tolerance_images=-1", "argument --tolerance_images: must be >= 0"),
    ("--trained_tolerance_points=-0.5", "argument --trained_tolerance_points: must be a finite number >= 0"),
    ("--min_agreement=1.5", "argument --min_agreement: must be in [0, 1]"),
    ("--ptq_images=0", "argument --ptq_images: must be >= 1"),
    ("--kind=int3", "argument --kind: invalid choice: 'int3'"),
])
def test_export_refuses_bad_flags_before_reading_the_run(flag, message, fake_run, tmp_path, capsys):
    output = tmp_path / "m.tflite"
    with pytest.raises(SystemExit) as exit_info:
        export.main([f"--run_dir={fake_run}", f"--output={output}", flag])
    assert exit_info.value.code == 2
    one_error_line(capsys, message)
    assert not output.exists()


@pytest.mark.parametrize("settings, message", [
    ({"eval_images": -5}, "--eval_images=-5"),
    ({"tolerance_points": -1.0}, "--tolerance_points=-1.0"),
    ({"min_agreement": 2.0}, "--min_agreement=2.0"),
    ({"trained_tolerance_points": float("inf")}, "--trained_tolerance_points=inf"),
    ({"range_batches": -1}, "--range_batches=-1"),
])
def test_export_run_checks_thresholds_first(settings, message, tmp_path):
    # The run does not even exist: the settings are refused before it is looked at.
    with pytest.raises(checks.InputError, match=message.replace("[", r"\[")):
        export.export_run(tmp_path / "absent", tmp_path / "m.tflite", **settings)


def test_export_output_paths_are_checked_before_the_weights(fake_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("x")
    assert export.main([f"--run_dir={fake_run}", f"--output={tmp_path / 'notes.txt' / 'm.tflite'}"]) == 2
    err = one_error_line(capsys, "is a file, not a folder", "choose another --output")
    assert "training" not in err  # the run is not blamed
    assert export.main([f"--run_dir={fake_run}", f"--output={tmp_path / 'm.onnx'}"]) == 2
    one_error_line(capsys, "must end in .tflite")
    folder = tmp_path / "ro"
    folder.mkdir()
    _unwritable(monkeypatch, folder)
    assert export.main([f"--run_dir={fake_run}", f"--output={folder / 'm.tflite'}"]) == 2
    one_error_line(capsys, "Read-only file system")
    # A good output: the weights are read next, and they are damaged (exit 1, the path named, no file).
    assert export.main([f"--run_dir={fake_run}", f"--output={tmp_path / 'out' / 'm.tflite'}"]) == 1
    one_error_line(capsys, "export failed: cannot read", str(fake_run / results.WEIGHTS), "re-run the training")
    assert not (tmp_path / "out" / "m.tflite").exists()


def test_export_bad_run_dirs_exit_2(tmp_path, capsys):
    assert export.main([f"--run_dir={tmp_path / 'absent'}"]) == 2
    one_error_line(capsys, "no run directory")
    (tmp_path / "file").write_text("x")
    assert export.main([f"--run_dir={tmp_path / 'file'}"]) == 2
    one_error_line(capsys, "is a file: give a run's folder")


def test_export_command_line_eval_images_negative():
    proc = subprocess.run([sys.executable, "-m", "tfq_noise.deploy.export", "--run_dir=results/x",
                           "--eval_images=-5"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--eval_images" in proc.stderr


# ----------------------------------------------------------------------------- the accuracy tolerance


def test_tolerance_rule_counts_images():
    allowed, rule = verify.accuracy_tolerance(0.3, 10_000)
    assert allowed == pytest.approx(0.3) and rule == "max(0.3 points, 10 images of 10000 = 0.10 points) = 0.30 points"
    allowed, rule = verify.accuracy_tolerance(0.3, 1000)
    assert allowed == pytest.approx(1.0) and rule == "max(0.3 points, 10 images of 1000 = 1.00 points) = 1.00 points"
    assert verify.accuracy_tolerance(0.3, 1000, tolerance_images=0)[0] == pytest.approx(0.3)
    assert verify.accuracy_tolerance(0.3, 3545)[0] == pytest.approx(0.3)  # FER+'s test set: the points bind


@pytest.fixture(scope="module")
def tiny_model_and_images(cifar10_data):
    from tfq_noise.models import resnet20

    model = resnet20(blocks_per_stage=1)
    images = verify.normalize_images(cifar10_data.test.images[:300], {"mean": [125.0] * 3, "std": [62.0] * 3})
    labels = np.argmax(verify.keras_logits(model, images), axis=1)  # the Keras model scores 100%
    return model, images, labels


def _litert_wrong_on(monkeypatch, k: int):
    """LiteRT's logits, with the top class of the first ``k`` images moved to another class."""
    real = verify.litert_logits

    def wrong(path, x, *a, **kw):
        logits = real(path, x, *a, **kw)
        logits[:k] = np.roll(logits[:k], 1, axis=1)
        assert np.all(np.argmax(logits[:k], 1) != np.argmax(real(path, x[:k], *a, **kw), 1))
        return logits

    monkeypatch.setattr(verify, "litert_logits", wrong)


def test_a_few_images_off_on_a_small_test_set_pass(tiny_model_and_images, tmp_path, monkeypatch):
    """The quick start's case: 4 images of 1,000 (0.4 points) failed the 0.3-point rule; here 8 of 300."""
    model, images, labels = tiny_model_and_images
    _litert_wrong_on(monkeypatch, 8)
    report = writer.export_model(model, "float32", tmp_path / "ok.tflite", eval_images=images, eval_labels=labels,
                                 min_agreement=0.9)
    assert report["litert_minus_keras_points"] == pytest.approx(-100 * 8 / 300)
    assert report["tolerance_points_applied"] == pytest.approx(100 * 10 / 300)
    assert report["tolerance_rule"] == "max(0.3 points, 10 images of 300 = 3.33 points) = 3.33 points"
    assert report["tolerance_images"] == 10 and (tmp_path / "ok.tflite").is_file()
    with pytest.raises(export.ExportError, match=r"by -2\.67 points on 300 test images \(8 images\); allowed: "
                                                 r"max\(0\.3 points, 0 images"):
        writer.export_model(model, "float32", tmp_path / "strict.tflite", eval_images=images, eval_labels=labels,
                            min_agreement=0.9, tolerance_images=0)
    assert not (tmp_path / "strict.tflite").exists()


def test_a_real_drop_still_fails(tiny_model_and_images, tmp_path, monkeypatch):
    model, images, labels = tiny_model_and_images
    _litert_wrong_on(monkeypatch, 30)  # 10 points on 300 images
    with pytest.raises(export.ExportError, match=r"differs from the Keras model's 100\.00% by -10\.00 points on 300 "
                                                 r"test images \(30 images\); allowed: max\(0\.3 points, 10 images of "
                                                 r"300 = 3\.33 points\) = 3\.33 points"):
        writer.export_model(model, "float32", tmp_path / "bad.tflite", eval_images=images, eval_labels=labels,
                            min_agreement=0.0)
    assert not list(tmp_path.iterdir())
    # On the full 10,000-image scale the rule is the 0.3 points: 31 images of 10,000 fail.
    assert verify.accuracy_tolerance(0.3, 10_000)[0] * 10_000 / 100 == pytest.approx(30)


def test_negative_tolerance_is_refused_before_the_conversion(tiny_model_and_images, tmp_path, monkeypatch):
    model, images, labels = tiny_model_and_images

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted before the settings were checked")

    monkeypatch.setattr(writer, "convert", no_conversion)
    with pytest.raises(checks.InputError, match=r"--tolerance_points=-1\.0"):
        writer.export_model(model, "float32", tmp_path / "m.tflite", eval_images=images, eval_labels=labels,
                            tolerance_points=-1.0)
    with pytest.raises(checks.InputError, match=r"--min_agreement=1\.5"):
        writer.export_model(model, "float32", tmp_path / "m.tflite", eval_images=images, eval_labels=labels,
                            min_agreement=1.5)
    assert not list(tmp_path.iterdir())
