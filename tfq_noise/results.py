"""The results schema and its files: one directory per run, written atomically.

``<results_dir>/<experiment>/<run>/``:

* ``config.json`` — the resolved :class:`~tfq_noise.config.RunConfig`;
* ``history.csv`` — one row per epoch (clean test metrics, noisy-label
  accuracy, memorization), rewritten atomically after every epoch;
* ``final.json`` — the summary below, written last: its presence means done;
* ``failed.json`` — instead of ``final.json`` when the run stopped on an error
  such as a NaN loss;
* ``provenance.json`` — commit, package versions, machine, data source;
* ``predictions.npz`` — the final model's class probabilities on the training and
  validation sets, with their labels (about 300 KB for 45,000 + 5,000 CIFAR-10
  images; see :func:`write_predictions`; files written before also hold the test set);
* ``warnings`` in ``final.json`` — what makes the run's figures doubtful (e.g. too
  few training steps for BatchNorm to settle), also printed when it starts;
* ``model.weights.h5`` — the final weights, without the optimizer's state (about 1.3 MB for ResNet20);
  committed only for the paper's protocol (``results/paper``), whose models the project ships;
* ``checkpoints/`` — never committed.

A figure made from runs records where it came from: :func:`atomic_save_figure` with ``inputs`` writes into the
PNG the folders it read, a digest of their runs' ``final.json`` and ``history.csv`` files and the command that
redraws it; :func:`stale_figure` says whether those files have changed since.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import math
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
# Sub-folder of a run holding the trainings a method makes before its own (confident learning's folds).
FOLDS = "folds"

# Keys every final.json holds (multi-label runs add per_task_f1 and average_f1).
FINAL_KEYS = (
    "dataset", "method", "noise_type", "noise_rate", "seed", "hparams", "epochs",
    "test_accuracy", "test_accuracy_last5", "best_test_accuracy", "wall_seconds",
)


TEMP_PREFIX = ".tmp-"  # temporary files of the atomic writer: ".tmp-<name>.<random><suffix>"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write(path: Path, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Calls ``write(temporary_path)`` next to ``path``, then renames: readers never see half a file.

    The file gets the permissions a plain ``open(path, "w")`` would (0666 less the umask), not
    ``mkstemp``'s 0600, so others sharing a results folder can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
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


FIGURE_SOURCE = "tfq_noise source"  # the PNG text chunk naming a figure's inputs
DIGESTED = (FINAL, HISTORY)  # the run files a figure is drawn from


def inputs_digest(roots: Iterable[Path]) -> str:
    """SHA-256 over every ``final.json`` and ``history.csv`` below each folder (their paths relative to it, then
    their bytes), folders in the order given: it changes when a run is added, removed or rewritten."""
    digest = hashlib.sha256()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such results folder")
        files = sorted((p for p in root.rglob("*") if p.name in DIGESTED and p.is_file()
                        and CHECKPOINTS not in p.relative_to(root).parts), key=lambda p: p.relative_to(root).as_posix())
        digest.update(f"{len(files)}\0".encode())
        for p in files:
            digest.update(p.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


def atomic_save_figure(fig, path: Path, inputs: Iterable[Path] | None = None, command: str | None = None,
                       **savefig_kwargs) -> None:
    """Saves a matplotlib figure atomically (the suffix tells matplotlib the format).

    ``inputs``: the results folders the figure was drawn from; a PNG then records them (relative to its own
    folder), :func:`inputs_digest` of them, and ``command``, the command that redraws it (see
    :func:`stale_figure`)."""
    path = Path(path)
    if inputs is not None:
        if path.suffix.lower() != ".png":
            raise ValueError(f"{path}: only a PNG records its inputs")
        inputs = [Path(r) for r in inputs]
        source = {"inputs": [os.path.relpath(r.resolve(), path.resolve().parent) for r in inputs],
                  "sha256": inputs_digest(inputs), "command": command}
        savefig_kwargs["metadata"] = {**savefig_kwargs.get("metadata", {}), FIGURE_SOURCE: json.dumps(source)}
    atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig_kwargs), suffix=path.suffix)


def figure_source(path: Path) -> dict | None:
    """What a PNG written by :func:`atomic_save_figure` records of its inputs, or None if it records none."""
    from PIL import Image

    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(FIGURE_SOURCE)
    return json.loads(text) if text else None


def stale_figure(path: Path) -> str | None:
    """None if the PNG's recorded inputs are unchanged; otherwise why it must be redrawn, and how."""
    path = Path(path)
    source = figure_source(path)
    if source is None:
        return f"{path} records no inputs: redraw it with the command that made it"
    roots = [path.parent / r for r in source["inputs"]]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        return f"{path} was drawn from {', '.join(missing)}, which no longer exists"
    if inputs_digest(roots) != source["sha256"]:
        return f"{path} is older than the runs it was drawn from: redraw it with {source.get('command') or 'its command'}"
    return None


def write_markdown(path: Path, title: str, lines: Iterable[str], figure: str | None = None, alt: str = "") -> Path:
    """A report's Markdown file, written atomically: ``# title``, the lines, and ``figure`` (a file name beside
    it) when given; returns ``path``."""
    text = [f"# {title}", "", *lines] + (["", f"![{alt}]({figure})"] if figure else [])
    atomic_write_text(Path(path), "\n".join(text) + "\n")
    return Path(path)


def write_npz(path: Path, arrays: Mapping[str, Any]) -> None:
    """A compressed ``.npz`` of plain arrays, written atomically (read it with ``allow_pickle=False``)."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})

    atomic_write(path, write, suffix=".npz")


def read_npz(path: Path) -> dict:
    """The arrays of an ``.npz`` written by :func:`write_npz`, or by :func:`write_predictions` (then in the plain
    layout: float16 probabilities, int64 labels and indices); object arrays (pickles) are refused."""
    import numpy as np

    from tfq_noise import predictions

    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return predictions.decode_predictions(arrays) if predictions.FORMAT_KEY in arrays else arrays


def write_predictions(path: Path, arrays: Mapping[str, Any], exact: Iterable[str] = (), softmax: bool = True) -> None:
    """Writes a run's ``predictions.npz`` compactly (:mod:`tfq_noise.predictions`); :func:`read_npz` reads it back
    in the plain layout. ``exact``: the splits whose probabilities stay float16; ``softmax``: rows sum to 1."""
    from tfq_noise import predictions

    write_npz(path, predictions.encode_predictions(arrays, exact, softmax))


def remove_stale_temporaries(directory: Path) -> int:
    """Deletes the atomic writer's leftovers (a process killed mid-write) below ``directory``; returns how many.

    Only call it where no other process is writing (e.g. a run folder this process holds the lock of);
    sub-folders locked by another live process (a fold run trained by another job) are left alone."""
    directory = Path(directory)
    me = {"host": platform.node(), "pid": os.getpid()}
    removed, held = 0, {}

    def held_by_another(folder: Path) -> bool:
        if folder not in held:
            held[folder] = (lock_owner(folder) or me) != me
        return held[folder]

    for path in directory.rglob(f"{TEMP_PREFIX}*"):
        if not path.is_file():
            continue
        if any(held_by_another(p) for p in path.parents if directory in p.parents):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _strict(value):
    """NaN and infinities become strings: strict JSON has no literal for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    text = json.dumps(_strict(json.loads(json.dumps(data, default=_json_default))), indent=2, sort_keys=True,
                      allow_nan=False)
    atomic_write_text(path, text + "\n")


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class DamagedFile(ValueError):
    """A results file that exists but cannot be read (truncated, corrupted)."""


def read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFile(f"{path} is damaged (not valid JSON: {error})") from None
    if not isinstance(data, dict):
        raise DamagedFile(f"{path} is damaged (a JSON object was expected)")
    return data


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
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = []
            for line, row in enumerate(reader, 2):
                if None in row or any(v is None for v in row.values()):  # a cut-off or overlong row
                    raise DamagedFile(f"{path} is damaged (line {line} does not have {len(reader.fieldnames)} "
                                      "fields)")
                rows.append({k: _number(v) for k, v in row.items()})
            return rows
    except (UnicodeDecodeError, csv.Error) as error:
        raise DamagedFile(f"{path} is damaged ({error})") from None


def _number(text: str):
    if text in ("", None):
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def read_history(path: Path) -> list[dict]:
    """A run's ``history.csv``: one row per epoch, numbers only (empty where a column began later), epochs
    0, 1, ... in order. Raises :class:`DamagedFile` for anything else (a cut header, text such as ``abc``)."""
    rows = read_csv(path)
    if not Path(path).exists():
        return rows
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if "epoch" not in header:
        raise DamagedFile(f"{path} is damaged (its header {','.join(header)!r} has no epoch column)")
    for line, row in enumerate(rows, 2):
        text = [f"{k}={v!r}" for k, v in row.items() if isinstance(v, str)]
        if text:
            raise DamagedFile(f"{path} is damaged (line {line} holds text where numbers belong: {', '.join(text)})")
        if row["epoch"] != line - 2:
            raise DamagedFile(f"{path} is damaged (line {line} is epoch {row['epoch']}, expected {line - 2})")
    return rows


# final.json: the type of each key every run has (None allowed where a run may have no value).
FINAL_TYPES = {"dataset": str, "method": str, "noise_type": str, "noise_rate": (int, float), "seed": int,
               "hparams": dict, "epochs": int, "test_accuracy": (int, float, type(None)),
               "test_accuracy_last5": (int, float, type(None)), "best_test_accuracy": (int, float, type(None)),
               "wall_seconds": (int, float)}


def read_final(path: Path) -> dict:
    """A run's ``final.json``, checked: every key of :data:`FINAL_KEYS` with its type, and as many history rows
    as epochs trained. Raises :class:`DamagedFile` naming the file and what is wrong."""
    final = read_json(path)
    wrong = [f"{key} missing" if key not in final else f"{key}={final[key]!r}" for key, kind in FINAL_TYPES.items()
             if key not in final or isinstance(final[key], bool) or not isinstance(final[key], kind)]
    if wrong:
        raise DamagedFile(f"{path} is damaged (not a run summary: {', '.join(wrong)})")
    history = Path(path).parent / HISTORY
    rows = read_history(history)
    if history.exists() and isinstance(final.get("epochs_trained"), int) and len(rows) != final["epochs_trained"]:
        raise DamagedFile(f"{history} is damaged (it holds {len(rows)} epochs, {path} says "
                          f"{final['epochs_trained']} were trained)")
    return final


def run_state(run_dir: Path) -> str:
    """'done', 'damaged' (a final.json, config.json or history.csv that cannot be read or is not what the
    project writes), 'failed', 'partial' (checkpoints, history or fold trainings but no result) or 'new'."""
    run_dir = Path(run_dir)
    try:
        if (run_dir / CONFIG).exists():
            read_json(run_dir / CONFIG)
        if (run_dir / FINAL).exists():
            read_final(run_dir / FINAL)
        read_history(run_dir / HISTORY)
    except DamagedFile:
        return "damaged"
    if (run_dir / FINAL).exists():
        return "done"
    if (run_dir / FAILED).exists():
        return "failed"
    if any((run_dir / name).exists() for name in (CHECKPOINTS, HISTORY, FOLDS)):
        return "partial"
    return "new"


def load_finals(experiment_dir: Path) -> list[dict]:
    """Every finished run's final.json below ``experiment_dir``, with its ``run_dir``.

    Raises :class:`DamagedFile` naming every run whose final.json, config.json or history.csv cannot be read
    (:func:`read_final`): a report over its runs stops rather than show a damaged one.
    """
    finals, damaged = [], []
    for path in sorted(Path(experiment_dir).glob(f"*/{FINAL}")):
        try:
            final = read_final(path)
            if (path.parent / CONFIG).exists():
                read_json(path.parent / CONFIG)
        except DamagedFile as error:
            damaged.append(str(error))
            continue
        final["run_dir"] = str(path.parent)
        finals.append(final)
    if damaged:
        raise DamagedFile("damaged runs (re-run them with python -m experiments.run, which trains a damaged run "
                          "again, or remove them): " + "; ".join(damaged))
    return finals


def run_precision(final: Mapping[str, Any]) -> str:
    """A finished run's compute precision: its final.json's, else its config.json's (runs written before
    final.json recorded it), else float32."""
    if final.get("precision"):
        return final["precision"]
    config = Path(final["run_dir"]) / CONFIG if final.get("run_dir") else None
    if config is not None and config.exists():
        return read_json(config).get("precision", "float32")
    return "float32"


def main_precision(finals: Iterable[Mapping[str, Any]]) -> tuple[list, list]:
    """(runs in the experiment's main precision, the others): float32 where any run is float32, else the
    commonest. Tables compare methods within one precision; ``python -m experiments.precision`` compares
    the precisions."""
    finals = list(finals)
    counts = collections.Counter(run_precision(f) for f in finals)
    if not counts:
        return [], []
    main = "float32" if "float32" in counts else counts.most_common(1)[0][0]
    return ([f for f in finals if run_precision(f) == main], [f for f in finals if run_precision(f) != main])


LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner(run_dir: Path) -> dict | None:
    """Who holds ``run_dir`` ({host, pid}), or None if nobody (or only a stale lock) does."""
    path = Path(run_dir) / LOCK
    try:
        owner = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError, UnicodeDecodeError):
        return None  # none, or empty / cut off by a kill between its creation and its writing: stale
    if owner.get("host") == platform.node() and not _alive(int(owner.get("pid", -1))):
        return None  # its process is gone: stale
    return owner


def acquire_run_lock(run_dir: Path) -> dict | None:
    """Takes ``run_dir`` for this process; returns None on success, else the owner's {host, pid}.

    The lock is a file created exclusively, holding the owner's host and pid. A lock whose process no longer
    exists on this host is stale and taken over; a lock from another host is respected (it may be alive:
    remove its file by hand if its job is known to be dead).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    me = {"host": platform.node(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            owner = lock_owner(run_dir)
            if owner is not None:
                return owner
            path.unlink(missing_ok=True)  # stale
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return None
    return lock_owner(run_dir) or {"host": "?", "pid": -1}


def release_run_lock(run_dir: Path) -> None:
    path = Path(run_dir) / LOCK
    try:
        owner = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return
    if owner.get("host") == platform.node() and owner.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


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
