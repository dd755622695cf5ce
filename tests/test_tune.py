"""experiments.tune: the Fig. 3 sweep through keras-tuner, its pick on validation only, and keras-tuner's
distributed mode (a chief and two workers on localhost) training each trial once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_search_spaces_are_the_fair_grids():
    import keras_tuner

    from experiments import tune

    def grid(family):
        hp = keras_tuner.HyperParameters()
        tune.SEARCH_SPACES[family](hp)
        values = [[]]
        for p in hp.space:
            values = [v + [(p.name, c)] for v in values for c in p.values]
        settings = []
        for v in values:
            fixed = keras_tuner.HyperParameters()
            for name, choice in v:
                fixed.Fixed(name, choice)
            settings.append(tune.SEARCH_SPACES[family](fixed))
        return settings

    assert [s["weight_bits"] for s in grid("quantization")] == [2, 3, 4, 8]
    assert all(s["weight_bits"] == s["activation_bits"] for s in grid("quantization"))
    assert sorted(s["prune_ratio"] for s in grid("pruning")) == [0.25, 0.5, 0.75, 0.9]
    assert {s["prune_criterion"] for s in grid("pruning")} == {"bn_gamma"}
    assert sorted((s["dropout_rate"], s["dropout_position"]) for s in grid("dropout")) == [
        (r, p) for r in (0.1, 0.3, 0.5) for p in ("blocks", "head")]
    assert sorted(s["weight_decay"] for s in grid("weight_decay")) == [0.003, 0.01, 0.03]
    assert {s["decay_rule"] for s in grid("weight_decay")} == {"paper_total"}
    assert sorted(s["label_smoothing"] for s in grid("label_smoothing")) == [0.1, 0.3, 0.6]


def test_families_and_method_specs():
    from experiments import grid, tune

    assert tune.families(["all"]) == list(tune.SEARCH_SPACES)
    assert tune.families(["dropout", "pruning"]) == ["dropout", "pruning"]
    with pytest.raises(ValueError, match="unknown family"):
        tune.families(["dropuot"])
    spec = tune.method_spec("dropout", {"dropout_rate": 0.3, "dropout_position": "blocks"})
    assert spec == "dropout[dropout_position=blocks;dropout_rate=0.3]"
    assert grid.parse_methods(spec) == [("dropout", {"dropout_position": "blocks", "dropout_rate": 0.3})]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_sweep_a_chief_and_two_workers(tmp_path, cifar10_dir):
    """keras-tuner's own distributed mode, set by its KERASTUNER_* variables: the chief hands out the four
    bit-width trials, two workers train them (each trial once), and the chief's summary picks the trial
    with the highest validation accuracy."""
    from tfq_noise import results

    port = _free_port()
    args = [sys.executable, "-m", "experiments.tune", "--flagfile=experiments/configs/smoke.flags",
            f"--results_dir={tmp_path}", "--methods=baseline", "--tune_method=quantization", "--epochs=1",
            "--train_size=300", "--eval_train_size=100", "--test_size=200", f"--cifar10_dir={cifar10_dir}"]
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("chief", "tuner0", "tuner1")}
    chief = subprocess.Popen(args, cwd=ROOT, env={**env, "KERASTUNER_TUNER_ID": "chief"},
                             stdout=logs["chief"], stderr=subprocess.STDOUT)
    time.sleep(5)
    workers = [subprocess.Popen(args, cwd=ROOT, env={**env, "KERASTUNER_TUNER_ID": name},
                                stdout=logs[name], stderr=subprocess.STDOUT) for name in ("tuner0", "tuner1")]
    try:
        codes = [p.wait(timeout=600) for p in [*workers, chief]]
    finally:
        for p in [*workers, chief]:
            p.kill()
        for f in logs.values():
            f.close()
    text = {name: (tmp_path / f"{name}.log").read_text() for name in logs}
    assert codes == [0, 0, 0], text
    trained = {name: [line.split()[2] for line in text[name].splitlines() if line.startswith("trial ")]
               for name in ("tuner0", "tuner1")}
    assert trained["tuner0"] and trained["tuner1"], trained  # both workers took trials
    runs = trained["tuner0"] + trained["tuner1"]
    assert len(runs) == len(set(runs)) == 4, runs  # every trial trained once
    summary = json.loads((tmp_path / "smoke" / "tuning" / "quantization_symmetric-0.40_seed0.json").read_text())
    assert sorted(t["run"] for t in summary["trials"]) == sorted(runs)
    val = {r: results.read_json(tmp_path / "smoke" / r / results.FINAL)["final_metrics"]["val_accuracy"]
           for r in runs}
    assert summary["pick"]["val_accuracy"] == pytest.approx(max(val.values()))
    assert val[summary["pick"]["run"]] == pytest.approx(max(val.values()))
    assert "validation" in summary["selection"]
