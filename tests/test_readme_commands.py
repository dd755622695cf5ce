"""The README's commands do what its text says, on a fresh clone, at tiny size: each command is read from the
README itself (so a changed command is the one tested), given only the flags that make it small."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "README.md").read_text()


def _bash_commands() -> list[str]:
    """Every ``python -m`` command of the README's bash blocks (continued lines joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", TEXT, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("python -m "):
                    commands.append(part)
    return commands


COMMANDS = _bash_commands()


def _one(prefix: str) -> list[str]:
    found = [c for c in COMMANDS if c.startswith(prefix)]
    assert len(found) == 1, (prefix, COMMANDS)
    return shlex.split(found[0])


def _run(argv, cwd, **env):
    argv = [sys.executable if a == "python" else a for a in argv]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_the_readme_commands_are_found():
    assert any(c.startswith("python -m experiments.run --flagfile=experiments/configs/quickstart.flags")
               for c in COMMANDS)
    assert any(c.startswith("python -m tfq_noise.deploy.predict") for c in COMMANDS)
    assert any(c.startswith("python -m pytest") for c in COMMANDS)


def test_command_1_the_quickstart_trains_both_models_and_writes_its_summary(tmp_path, cifar10_dir):
    argv = _one("python -m experiments.run") + [
        f"--results_dir={tmp_path}", "--train_size=200", "--epochs=1", "--eval_train_size=50", "--test_size=100"]
    done = _run(argv, ROOT, TFQ_NOISE_CIFAR10_DIR=str(cifar10_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = tmp_path / "quickstart" / "summary.md"
    assert summary.is_file()
    runs = [p for p in (tmp_path / "quickstart").iterdir() if p.is_dir()]
    assert sorted(p.name.split("__")[1].split("_")[0] for p in runs) == ["baseline", "quantization"]
    assert all((p / "final.json").is_file() for p in runs)


def test_the_predict_command_on_a_folder_of_images(tmp_path, cifar10_data):
    """The shipped-model command of the README, with a shipped file and a folder of a user's images."""
    import tfq_noise  # noqa: F401
    import tensorflow as tf

    argv = _one("python -m tfq_noise.deploy.predict")
    (named,) = [a for a in argv if a.endswith(".tflite")]
    assert (ROOT / named).is_file(), f"the README names {named}, which tflite_models/ does not hold"
    images = tmp_path / "images"
    images.mkdir()
    for i in range(100):
        (images / f"{i:02d}.png").write_bytes(tf.io.encode_png(cifar10_data.test.images[i]).numpy())
    argv = [str(ROOT / named) if a.endswith(".tflite") else str(images) if a == "path/to/images/" else
            f"--output={tmp_path / 'predictions.csv'}" if a.startswith("--output=") else a for a in argv]
    done = _run(argv, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 100
    accuracy = np.mean([int(r["class_index"]) == cifar10_data.test.labels[int(Path(r["path"]).stem)] for r in rows])
    assert accuracy > 0.55  # the shipped model (about 70% on the test set), not chance (10%) nor a weak model
