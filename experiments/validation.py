"""What the report's tables read of a run, checked before anything is drawn or written.

``results.load_finals`` refuses files that are not valid JSON or lack what every run writes; this refuses what
the tables would trip on further down (an unknown method, a figure that is text, a config.json without the
protocol's numbers) with one message naming every such file, and a folder without finished runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from tfq_noise import methods, results


class BadRun(ValueError):
    """Runs whose ``final.json`` (or ``config.json``) is readable JSON but not what a finished run writes."""


class NoRuns(ValueError):
    """An experiment folder without a finished run: nothing to report."""


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# What the tables read of a run, by type: required in final.json, optional in final.json, required in
# config.json (the protocol line).
FINAL_REQUIRED = {"method": str, "noise_type": str, "noise_rate": _number, "seed": int}
FINAL_OPTIONAL = {"dataset": str, "hparams": dict, "precision": str, "data_caveat": str}
FINAL_NUMBERS = ("test_accuracy", "last_epoch_test_accuracy", "best_test_accuracy", "test_accuracy_last5",
                 "wall_seconds", "last_memorized", "last_trainmode_memorized", "last_corrected", "last_mode_gap",
                 "realized_flip_rate", "epochs", "epochs_trained", "selected_epoch", "num_outputs")
CONFIG_NUMBERS = ("epochs", "batch_size", "learning_rate")


def _type_problem(value, kind) -> str | None:
    if kind is _number:
        return None if _number(value) else "a number"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    return None if isinstance(value, kind) else {str: "a string", dict: "an object"}[kind]


def run_problems(final: Mapping, config: Mapping | None = None) -> list[str]:
    """What keeps a run's final.json (and, when given, the config.json the protocol line reads) from being
    tabulated: missing keys, wrong types, an unknown method; empty if nothing."""
    problems = []
    for key, kind in FINAL_REQUIRED.items():
        if key not in final:
            problems.append(f"no {key!r}")
        elif (want := _type_problem(final[key], kind)) is not None:
            problems.append(f"{key!r} must be {want}, got {final[key]!r}")
    for key, kind in FINAL_OPTIONAL.items():
        if final.get(key) is not None and (want := _type_problem(final[key], kind)) is not None:
            problems.append(f"{key!r} must be {want}, got {final[key]!r}")
    for key in FINAL_NUMBERS:
        if final.get(key) is not None and not _number(final[key]):
            problems.append(f"{key!r} must be a number or null, got {final[key]!r}")
    if isinstance(final.get("method"), str):
        try:
            methods.method_names(final["method"])
        except ValueError as error:
            problems.append(str(error))
    if config is not None:
        for key in CONFIG_NUMBERS:
            if not _number(config.get(key)):
                problems.append(f"its {results.CONFIG}'s {key!r} must be a number, got {config.get(key)!r}")
    return problems


def check_runs(finals: Sequence[Mapping], protocol: bool = False) -> None:
    """Raises :class:`BadRun` naming every run whose final.json the tables cannot read, and why; with
    ``protocol``, its config.json too (:func:`protocol_text` reads it)."""
    bad = []
    for f in finals:
        path = Path(f["run_dir"]) / results.FINAL
        config_path = Path(f["run_dir"]) / results.CONFIG
        config = results.read_json(config_path) if protocol and config_path.exists() else None
        problems = run_problems(f, config)
        if protocol and config is None:
            problems.append(f"no {results.CONFIG} beside it")
        if problems:
            bad.append(f"{path}: " + ", ".join(problems))
    if bad:
        raise BadRun("not a finished run's summary (re-run it with python -m experiments.run, or remove it): "
                     + "; ".join(bad))
