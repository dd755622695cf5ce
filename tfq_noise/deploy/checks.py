"""Input checks shared by the deploy commands (export, benchmark, predict), run before any expensive work.

* :class:`InputError`: bad input (a flag, a path, a file); the command exits 2 and has written nothing.
* :class:`Parser`: an ``argparse`` parser whose errors are one ``error: ...`` line (exit 2) and whose
  ``--help`` shows every default; :func:`positive_int`, :func:`non_negative_int`, :func:`non_negative_float`,
  :func:`fraction`, :func:`int_list` are its argument types.
* :func:`check_model`: a .tflite file that LiteRT can load and run (in a subprocess: a damaged file can abort
  LiteRT's C++ code), of the size and content its export report (``<model>.json``) records.
* :func:`check_output`: an output path whose folder exists (or can be made) and takes a new file.
* :func:`sha256_file`.

Exit codes of the deploy commands: 0 done; 1 the operation failed (a conversion or verification, a run of
LiteRT, a write that failed midway); 2 bad input, nothing written; 130 interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from tfq_noise.deploy.flatbuffer import TFLITE_IDENTIFIER, ExportError

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
_LITERT_RUN = Path(__file__).resolve().with_name("litert_run.py")


class InputError(ExportError):
    """Bad input (flag, path, file): refused before anything was written (exit 2)."""


# ----------------------------------------------------------------------------- command line


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default (not for flags without one or whose help already states it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """One ``error: ...`` line on stderr and exit 2 for a bad flag; ``--help`` lists the defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see --help)\n")


def _number(text: str, kind, name: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, "a number >= 0")
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = _number(text, float, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    """``1,2,4``: integers >= 1, at least one."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected a comma-separated list of integers >= 1, got nothing")
    return [positive_int(p) for p in parts]


# ----------------------------------------------------------------------------- files


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_object(path) -> dict | None:
    """A JSON object from ``path``, or None if the file is missing, unreadable or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def export_report(model) -> dict | None:
    """The export report beside a model (``<model>.json``), or None if there is none or it is not a JSON object."""
    return read_json_object(Path(model).with_name(Path(model).name + ".json"))


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("INFO:")]
    return lines[-1] if lines else "no message"


def check_model(model, *, probe: bool = True, timeout: float = 120) -> dict:
    """``model`` is a .tflite LiteRT can run: returns its input and output tensors (see ``litert_run.describe``).

    Refused (:class:`InputError`, naming the file): a missing or unreadable file, one without the ``TFL3``
    identifier, one whose size or SHA-256 differs from what its export report records (a truncated or
    bit-flipped copy), and, with ``probe``, one LiteRT cannot load, allocate or run once (checked in a
    subprocess).
    """
    path = Path(model)
    if not path.is_file():
        raise InputError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise InputError(f"{path} is not a TFLite model (no {TFLITE_IDENTIFIER.decode()} identifier): give .tflite "
                         "files written by python -m tfq_noise.deploy.export")
    report = export_report(path)
    if report is not None:
        size, recorded = path.stat().st_size, report.get("size_bytes")
        if isinstance(recorded, int) and size != recorded:
            raise InputError(f"{path} is {size:,} bytes but its export report {path.name}.json records "
                             f"{recorded:,}: the file is truncated or was changed after export; export it again")
        if report.get("sha256") and sha256_file(path) != report["sha256"]:
            raise InputError(f"{path} differs from the file its export report {path.name}.json describes (SHA-256): "
                             "it is damaged (e.g. a flipped bit) or was changed after export; export it again")
    if not probe:
        return {}
    try:
        proc = subprocess.run([sys.executable, "-P", str(_LITERT_RUN), "--probe", str(path)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: LiteRT did not load and run it once within {timeout:.0f} s") from None
    if proc.returncode != 0:
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else _last_error_line(proc.stderr)
        raise InputError(f"{path} is damaged or not a model LiteRT can run ({how}); export it again")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_models(models: Sequence[str | Path], **kwargs) -> list[dict]:
    return [check_model(m, **kwargs) for m in models]


def _existing_ancestor(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_output(output, *, flag: str = "--output", suffix: str | None = None) -> Path:
    """``output`` can be written: it is not a folder, its folder is a writable folder (or can be made in one).

    Writes and removes an empty temporary file to prove it (``os.access`` passes on a read-only file
    system for root). Raises :class:`InputError` naming the flag and what to do.
    """
    output = Path(output)
    if suffix and output.suffix != suffix:
        raise InputError(f"{flag}={output} must end in {suffix}")
    if output.is_dir():
        raise InputError(f"{flag}={output} is a folder: give a file name (e.g. {output / ('out' + (suffix or ''))})")
    parent = output.parent
    base = _existing_ancestor(parent)
    if not base.is_dir():
        raise InputError(f"{flag}={output}: {base} is a file, not a folder; choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".tmp-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"{flag}={output}: cannot write in {base.resolve()} ({error.strerror or error}); choose a "
                         f"writable folder for {flag}") from None
    return output


def write_bytes_atomic(path, data: bytes) -> None:
    """Writes ``data`` next to ``path`` and renames it into place; nothing is left behind if that fails."""
    from tfq_noise import results

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    results.atomic_write(Path(path), write)


def json_text(data: Any) -> str:
    from tfq_noise import results

    return json.dumps(data, indent=2, sort_keys=True, default=results._json_default) + "\n"  # noqa: SLF001
