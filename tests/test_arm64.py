"""The arm64 cross-check (tfq_noise.deploy.arm64): qemu and setup plumbing, the comparison, a host-only run,
and, where an arm64 root has been set up, a real emulated run."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
from tfq_noise.deploy import arm64, convert

NORMALIZATION = {"mean": [120.0, 120.0, 120.0], "std": [60.0, 60.0, 60.0]}


def test_qemu_version_rule():
    assert arm64.parse_qemu_version("qemu-aarch64 version 10.0.2 (Debian 1:10.0.2+ds-2)") == (10, 0, 2)
    assert arm64.parse_qemu_version("qemu-aarch64 version 7.2.22 (Debian)") == (7, 2, 22)
    arm64.check_qemu((8, 1))
    arm64.check_qemu((10, 0, 2))
    with pytest.raises(arm64.Arm64Error, match="too old.*cpuinfo"):
        arm64.check_qemu((7, 2, 22))
    with pytest.raises(arm64.Arm64Error, match="cannot read"):
        arm64.parse_qemu_version("no version here")


def test_setup_commands(tmp_path):
    debootstrap, pip = arm64.setup_commands(tmp_path, "2.3.0", "2.4.6")
    assert debootstrap[:4] == ["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase"]
    assert str(tmp_path / "sysroot") in debootstrap and "bookworm" in debootstrap
    assert "python3-minimal" in debootstrap[4]
    assert pip[pip.index("--target") + 1] == str(tmp_path / "site")
    assert "ai-edge-litert==2.3.0" in pip and "numpy==2.4.6" in pip
    assert pip[pip.index("--python-version") + 1] == "3.11" and "manylinux_2_27_aarch64" in pip


def test_merge_usr_moves_lib_into_usr(tmp_path):
    root = tmp_path / "sysroot"
    (root / "lib" / "aarch64-linux-gnu").mkdir(parents=True)
    (root / "lib" / "aarch64-linux-gnu" / "libx.so").write_text("x")
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "ld-linux-aarch64.so.1").write_text("ld")
    arm64.merge_usr(root)
    assert (root / "lib").is_symlink() and (root / "bin").is_symlink()
    assert (root / "lib" / "ld-linux-aarch64.so.1").read_text() == "ld"
    assert (root / "usr" / "lib" / "aarch64-linux-gnu" / "libx.so").read_text() == "x"
    arm64.merge_usr(root)  # idempotent
    assert (root / "lib" / "aarch64-linux-gnu" / "libx.so").read_text() == "x"


def test_compare_outputs_counts_disagreements():
    native = np.array([[5, 1, 0], [0, 7, 1], [2, 2, 9], [3, 0, 0]], np.int8)
    arm = native.copy()
    arm[1] = [0, 7, 2]  # differs by one step, same class
    arm[3] = [3, 4, 0]  # another class
    labels = np.array([0, 1, 2, 1])
    report = arm64.compare_outputs(native, arm, labels, output_scale=0.1)
    assert report["top1_agreement"] == 0.75 and report["top1_disagreements"] == 1
    assert report["bit_identical_outputs"] == 0.5
    assert report["max_abs_output_difference"] == 4.0
    assert report["accuracy_x86_64"] == 0.75 and report["accuracy_arm64"] == 1.0
    assert report["accuracy_difference_points"] == pytest.approx(25.0)
    assert report["output_difference_unit"] == "output quantization steps"
    with pytest.raises(arm64.Arm64Error, match="shapes differ"):
        arm64.compare_outputs(native, arm[:3], labels, None)


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory):
    from tfq_noise import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 8, 8, 3)).astype(np.uint8)
    calibration = (pixels.astype(np.float32) - 120.0) / 60.0
    folder = tmp_path_factory.mktemp("arm64")
    path = folder / "tiny_ptq_int8.tflite"
    path.write_bytes(convert.convert_ptq_int8(model, calibration))
    Path(str(path) + ".json").write_text(json.dumps({"source": {"normalization": NORMALIZATION}}))
    images = folder / "images.npz"
    np.savez(images, images=pixels, labels=rng.integers(0, 4, 40))
    return {"model": path, "images": images, "pixels": pixels}


def test_check_with_host_as_substitute(tiny_int8):
    pixels, labels = arm64.load_images(str(tiny_int8["images"]), None, 30)
    assert pixels.shape == (30, 8, 8, 3) and labels.shape == (30,)
    lines = []
    report = arm64.check([tiny_int8["model"]], Path("unused"), pixels=pixels, labels=labels, kernels="reference",
                         arm_prefix=([sys.executable], None), print_fn=lambda *a, **k: lines.append(a[0]))
    (entry,) = report["models"]
    assert entry["images"] == 30 and entry["top1_agreement"] == 1.0 and entry["bit_identical_outputs"] == 1.0
    assert entry["x86_64"]["kernels"] == "reference" and not entry["x86_64"]["delegate_applied"]
    assert entry["x86_64"]["delegated_ops"] == 0 and entry["x86_64"]["operators"] >= 3
    assert report["passed"] and "not measured" in report["latency"]
    assert any("top-1 agreement 1.0000" in line for line in lines)


def test_cli_errors(tiny_int8, tmp_path, capsys):
    no_sidecar = tmp_path / "bare.tflite"
    no_sidecar.write_bytes(tiny_int8["model"].read_bytes())
    assert arm64.main(["check", str(no_sidecar), f"--images={tiny_int8['images']}"]) == 1
    assert "normalization" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, pictures=tiny_int8["pixels"])
    assert arm64.main(["check", str(tiny_int8["model"]), f"--images={bad}", f"--root={tmp_path}"]) == 1
    assert "'images'" in capsys.readouterr().err
    with pytest.raises(arm64.Arm64Error, match="setup"):
        arm64.arm_command(tmp_path / "nothing", [])


def _arm_ready() -> bool:
    if shutil.which(arm64.QEMU) is None or not (arm64.DEFAULT_ROOT / "sysroot" / arm64.ARM_PYTHON).exists():
        return False
    try:
        arm64.check_qemu(arm64.qemu_version())
    except arm64.Arm64Error:
        return False
    return True


@pytest.mark.skipif(not _arm_ready(), reason="no arm64 root (python -m tfq_noise.deploy.arm64 setup) or qemu < 8.1")
def test_real_arm64_run(tiny_int8, tmp_path):
    output = tmp_path / "arm.json"
    code = arm64.main(["check", str(tiny_int8["model"]), f"--images={tiny_int8['images']}", "--eval_images=20",
                       "--min_agreement=0.8", f"--output={output}"])
    report = json.loads(output.read_text())
    (entry,) = report["models"]
    assert entry["arm64"]["machine"] == "aarch64" and entry["x86_64"]["machine"] == "x86_64"
    assert report["emulator"]["qemu"] and entry["images"] == 20
    # default delegates: XNNPACK takes every operator of this small int8 model on both sides
    for side in ("x86_64", "arm64"):
        assert entry[side]["delegate_applied"] and entry[side]["delegated_ops"] == entry[side]["operators"]
    assert code == (0 if entry["top1_agreement"] >= 0.8 else 1)


def test_a_side_that_hangs_is_a_clear_error(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    with pytest.raises(arm64.Arm64Error, match="did not finish within 1 s.*--eval_images"):
        arm64.run_side(sleeper, None, tmp_path / "m.tflite", tmp_path / "in.npy", tmp_path / "out.npy", "default",
                       timeout=1)


def test_committed_reports_are_what_the_verification_readme_says():
    """Each row of tflite_models/verification/README.md's arm64 table is its committed report's figures."""
    import re

    root = Path(__file__).resolve().parents[1] / "tflite_models" / "verification"
    section = (root / "README.md").read_text().split("## arm64 against x86-64", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(arm64_[^`]+\.json)` \| `([^`]+)` \| [^|]+ \| ([\d,]+) \| ([\d.]+)% \| ([\d.]+)% \|$",
                      section, re.M)
    assert len(rows) >= 4
    for report_name, model, images, agreement, identical in rows:
        report = json.loads((root / report_name).read_text())
        [entry] = report["models"]
        assert report["passed"] and entry["passed"], report_name
        assert Path(entry["model"]).name == model, report_name
        assert report["images"] == entry["images"] == int(images.replace(",", "")), report_name
        assert f"{100 * entry['top1_agreement']:g}" == agreement, report_name
        assert f"{100 * entry['bit_identical_outputs']:g}" == identical, report_name
