"""The results schema and its files: one directory per run, written atomically.

``<results_dir>/<experiment>/<run>/``:

* ``config.json`` — the resolved :class:`~tfq_noise.config.RunConfig`;
* ``history.csv`` — one row per epoch (clean test metrics, noisy-label
  accuracy, memorization), rewritten atomically after every epoch;
* ``final.json`` — the summary below, written last: its presence means done;
* ``failed.json`` — instead of ``final.json`` when the run stopped on an error
  such as a NaN loss;
* ``provenance.json`` — commit, package versions, machine, data source;
* ``predictions.npz`` — the final model's class probabilities (float16) on the
  training, validation and test sets, with their labels (about 1 MB);
* ``model.weights.h5`` and ``checkpoints/`` — never committed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

FINAL = "final.json"
FAILED = "failed.json"
CONFIG = "config.json"
HISTORY = "history.csv"
PROVENANCE = "provenance.json"
WEIGHTS = "model.weights.h5"
PREDICTIONS = "predictions.npz"
CHECKPOINTS = "checkpoints"

# Keys every final.json holds (multi-label runs add per_task_f1 and average_f1).
FINAL_KEYS = (
    "dataset", "method", "noise_type", "noise_rate", "seed", "hparams", "epochs",
    "test_accuracy", "test_accuracy_last5", "best_test_accuracy", "wall_seconds",
)


def atomic_write(path: Path, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Calls ``write(temporary_path)`` next to ``path``, then renames: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def atomic_save_figure(fig, path: Path, **savefig_kwargs) -> None:
    """Saves a matplotlib figure atomically (the suffix tells matplotlib the format)."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig_kwargs), suffix=Path(path).suffix)


def write_npz(path: Path, arrays: Mapping[str, Any]) -> None:
    """A compressed ``.npz`` of plain arrays, written atomically (read it with ``allow_pickle=False``)."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})

    atomic_write(path, write, suffix=".npz")


def read_npz(path: Path) -> dict:
    """The arrays of an ``.npz`` written by :func:`write_npz`; object arrays (pickles) are refused."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str):
    if text in ("", None):
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def run_state(run_dir: Path) -> str:
    """'done', 'failed', 'partial' (checkpoints or history but no result) or 'new'."""
    run_dir = Path(run_dir)
    if (run_dir / FINAL).exists():
        return "done"
    if (run_dir / FAILED).exists():
        return "failed"
    if (run_dir / CHECKPOINTS).exists() or (run_dir / HISTORY).exists():
        return "partial"
    return "new"


def load_finals(experiment_dir: Path) -> list[dict]:
    """Every finished run's final.json below ``experiment_dir``, with its ``run_dir``."""
    finals = []
    for path in sorted(Path(experiment_dir).glob(f"*/{FINAL}")):
        final = read_json(path)
        final["run_dir"] = str(path.parent)
        finals.append(final)
    return finals


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(data_info: Mapping[str, Any] | None = None) -> dict:
    """Where a result came from: code, packages, machine, data."""
    from importlib import metadata

    packages = {}
    for name in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "tensorflow-datasets", "numpy",
                 "keras-tuner", "ai-edge-litert"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "git_commit": _git_commit(),
        "packages": packages,
        "python": platform.python_version(),
        "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count()},
        "data": dict(data_info or {}),
    }
