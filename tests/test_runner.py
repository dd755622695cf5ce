"""Tests of the grid runner (``experiments/run.py``) and its flag parsing (``experiments/grid.py``).

Two real invocations run as child processes, started together at the
beginning of the module: the smoke grid and a tiny MirroredStrategy run over
two logical CPUs (logical devices must be set before TensorFlow starts). The
rest (skip, dry runs, shards, bad flags) calls ``run.main`` (or ``run.run``)
in this process with freshly parsed flags; nothing in it trains.
"""

from __future__ import annotations

import collections
import math
import os
import subprocess
import sys
from pathlib import Path

import tfq_noise  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import pytest
from absl import flags

from experiments import grid
from experiments import run as runner
from tfq_noise import results
from tfq_noise.config import RunConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE = REPO_ROOT / "experiments" / "configs" / "smoke.flags"
FLAGS = flags.FLAGS

MIRRORED_ARGS = ["--experiment=mirrored", "--methods=baseline", "--model_kwargs=blocks_per_stage=1",
                 "--train_size=256", "--batch_size=64", "--epochs=1", "--eval_train_size=64",
                 "--noise_rates=0.2", "--strategy=mirrored", "--logical_cpus=2"]


def parse(args):
    FLAGS.unparse_flags()
    FLAGS(["run", *map(str, args)])


def run_in_process(args, capsys):
    """``run.main`` with ``args`` parsed as on the command line: (return code, stdout, stderr)."""
    parse(args)
    try:
        code = runner.main(["run"])
    finally:
        FLAGS.unparse_flags()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def grid_for(args) -> list[RunConfig]:
    parse(args)
    try:
        return runner.build_grid()
    finally:
        FLAGS.unparse_flags()


def dry_run_names(out: str) -> list[str]:
    return [line.split()[-1] for line in out.splitlines() if line.startswith("  ")]


# --------------------------------------------------------------------------------------
# Child processes, started once for the module
# --------------------------------------------------------------------------------------


class Child:
    def __init__(self, name, args, directory: Path):
        self.results_dir = directory / "results"
        self.stdout_path, self.stderr_path = directory / f"{name}.out", directory / f"{name}.err"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "experiments.run", *args, f"--results_dir={self.results_dir}",
                 "--report=false"], cwd=REPO_ROOT, env=env, stdout=out, stderr=err)
        self.returncode = None

    def wait(self):
        if self.returncode is None:
            try:
                self.returncode = self.process.wait(timeout=600)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise
            self.stdout, self.stderr = self.stdout_path.read_text(), self.stderr_path.read_text()
        return self


@pytest.fixture(scope="module")
def children(tmp_path_factory, cifar10_dir):
    data = f"--cifar10_dir={cifar10_dir}"
    started = {
        "smoke": Child("smoke", [f"--flagfile={SMOKE}", data], tmp_path_factory.mktemp("smoke")),
        "mirrored": Child("mirrored", [*MIRRORED_ARGS, data], tmp_path_factory.mktemp("mirrored")),
    }
    yield started
    for child in started.values():
        if child.process.poll() is None:
            child.process.kill()


@pytest.fixture(scope="module")
def smoke(children, cifar10_dir):
    child = children["smoke"].wait()
    child.base_args = [f"--flagfile={SMOKE}", f"--results_dir={child.results_dir}", "--report=false",
                       f"--cifar10_dir={cifar10_dir}"]
    child.experiment_dir = child.results_dir / "smoke"
    return child


# --------------------------------------------------------------------------------------
# The smoke grid
# --------------------------------------------------------------------------------------


def test_smoke_grid_writes_every_run(smoke):
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert "smoke: 2 runs in this shard: 0 done, 2 to run" in smoke.stdout
    expected = {c.run_name: c for c in grid_for([f"--flagfile={SMOKE}"])}
    assert {c.method for c in expected.values()} == {"baseline", "quantization"}
    assert sorted(p.name for p in smoke.experiment_dir.iterdir()) == sorted(expected)
    for name, config in expected.items():
        run_dir = smoke.experiment_dir / name
        assert results.run_state(run_dir) == "done"
        assert not (run_dir / results.FAILED).exists()
        stored = results.read_json(run_dir / results.CONFIG)
        assert stored == config.to_dict()
        assert RunConfig.from_dict(stored).run_name == name
        history = results.read_csv(run_dir / results.HISTORY)
        assert [r["epoch"] for r in history] == [0, 1]
        for row in history:
            for key in ("loss", "test_accuracy", "val_accuracy", "memorized", "corrected"):
                assert row[key] is not None and math.isfinite(row[key]), (name, key)
        final = results.read_json(run_dir / results.FINAL)
        missing = set(results.FINAL_KEYS) - set(final)
        assert not missing, (name, missing)
        assert (final["dataset"], final["method"], final["noise_type"], final["noise_rate"], final["seed"],
                final["epochs"]) == ("cifar10", config.method, "symmetric", 0.4, 0, 2)
        assert final["hparams"] == config.resolved_hparams
        assert final["test_accuracy"] == history[-1]["test_accuracy"]
        assert 0.0 <= final["test_accuracy"] <= 1.0 and final["wall_seconds"] > 0
        provenance = results.read_json(run_dir / results.PROVENANCE)
        assert {"git_commit", "packages", "python", "machine", "data"} <= set(provenance)
        assert provenance["packages"]["tensorflow"] and provenance["data"]["train_examples"] == 540
        assert not (run_dir / results.CHECKPOINTS / "backup").exists()
    quantized = results.read_json(smoke.experiment_dir / [n for n in expected if "quantization" in n][0]
                                  / results.FINAL)
    assert quantized["hparams"]["weight_bits"] == 4 and quantized["hparams"]["first_last_bits"] == 8


def test_second_invocation_skips_finished_runs(smoke, capsys):
    finals = sorted(smoke.experiment_dir.glob(f"*/{results.FINAL}"))
    before = {p: p.stat().st_mtime_ns for p in finals}
    code, out, err = run_in_process(smoke.base_args, capsys)
    assert code == 0, err
    assert "smoke: 2 runs in this shard: 2 done, 0 to run" in out
    assert {p: p.stat().st_mtime_ns for p in finals} == before
    code, out, _ = run_in_process([*smoke.base_args, "--dry_run"], capsys)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  ")] == ["done", "done"]


def test_changed_settings_are_not_reported_as_done(smoke, capsys):
    code, out, _ = run_in_process([*smoke.base_args, "--epochs=3", "--dry_run"], capsys)
    assert code != 0 or "0 done, 2 to run" in out, out


# --------------------------------------------------------------------------------------
# Shards and dry runs
# --------------------------------------------------------------------------------------

BIG_GRID = ["--methods=baseline,quantization,dropout", "--noise_rates=0.2,0.4", "--seeds=0,1",
            "--model_kwargs=blocks_per_stage=1", "--report=false"]


def test_shards_partition_the_grid(tmp_path, capsys):
    results_dir = tmp_path / "results"
    args = [*BIG_GRID, f"--results_dir={results_dir}", "--dry_run"]
    code, out, _ = run_in_process(args, capsys)
    assert code == 0
    everything = dry_run_names(out)
    assert len(everything) == len(set(everything)) == 12
    assert "default: 12 runs in this shard: 0 done, 12 to run" in out
    shards = []
    for index in range(3):
        code, out, _ = run_in_process([*args, f"--shard_index={index}", "--num_shards=3"], capsys)
        assert code == 0
        shards.append(dry_run_names(out))
        assert f"default: {len(shards[-1])} runs in this shard" in out
    assert sorted(n for shard in shards for n in shard) == sorted(everything)  # union, no repeats
    assert all(shard for shard in shards)
    assert not results_dir.exists()  # a dry run writes nothing


def test_grid_order_is_seed_outermost():
    configs = grid_for(BIG_GRID)
    assert [c.seed for c in configs] == [0] * 6 + [1] * 6
    assert [c.noise_rate for c in configs[:6]] == [0.2] * 3 + [0.4] * 3
    assert [c.method for c in configs[:3]] == ["baseline", "quantization", "dropout"]
    assert all(c.model_kwargs == {"blocks_per_stage": 1} for c in configs)


def test_shared_hparams_apply_only_to_methods_that_have_them():
    configs = grid_for(["--methods=baseline,quantization", "--hparams=weight_bits=2"])
    by_method = {c.method: c for c in configs}
    assert by_method["quantization"].resolved_hparams["weight_bits"] == 2
    assert by_method["baseline"].resolved_hparams == {}
    assert "weight_bits-2" in by_method["quantization"].run_name


# --------------------------------------------------------------------------------------
# Bad flags
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    (["--methods=baseline,nonexistent"], "unknown method"),
    (["--methods=baseline+dropout"], "baseline"),
    (["--methods=pruning+quantization"], "cannot be combined"),
    (["--noise_rates=1.5"], "outside [0, 1]"),
    (["--noise_rates=abc"], "must be numbers"),
    (["--seeds=0,x"], "integers"),
    (["--noise_type=gaussian"], "noise_type"),
    (["--methods=quantization[weight_bits=9]"], "weight_bits"),
    (["--methods=dropout[dropout_rate=1.0]"], "dropout_rate"),
    (["--methods=quantization[weight_bits=2"], "unbalanced"),
    (["--methods=early_stopping", "--validation_fraction=0"], "validation_fraction"),
    (["--experiment=a/b"], "experiment name"),
    (["--shard_index=2", "--num_shards=2"], "shard_index"),
    (["--cifar10_dir=/nonexistent"], "does not exist"),
    (["--only_folds=a"], "fold numbers"),
    (["--only_folds=0,0", "--methods=cleanlab"], "twice"),
    (["--only_folds=0"], "trains no folds"),
    (["--only_folds=5", "--methods=cleanlab"], "out of range"),
])
def test_bad_flags_stop_before_anything_is_written(bad, message, tmp_path, cifar10_dir, capsys):
    results_dir = tmp_path / "results"
    args = [f"--flagfile={SMOKE}", f"--results_dir={results_dir}", "--report=false",
            f"--cifar10_dir={cifar10_dir}", *bad]
    code, out, err = run_in_process(args, capsys)
    assert code == 2, out + err
    assert err.startswith("error:") and message in err, err
    assert not results_dir.exists()


@pytest.mark.parametrize("bad", [["--model=resnet21"], ["--model_kwargs=blocks_per_stag=1"]])
def test_bad_model_flags_stop_before_anything_is_written(bad, tmp_path, cifar10_dir, capsys, monkeypatch):
    results_dir = tmp_path / "results"
    args = [f"--flagfile={SMOKE}", f"--results_dir={results_dir}", "--report=false",
            f"--cifar10_dir={cifar10_dir}", "--train_size=64", "--epochs=1", *bad]
    import tfq_noise.train

    def no_fit(*args, **kwargs):  # should never be reached; stops a mistaken run from training
        raise AssertionError("training started")

    monkeypatch.setattr(tfq_noise.train.keras.Model, "fit", no_fit)
    try:
        code, out, err = run_in_process(args, capsys)
    except Exception as error:  # noqa: BLE001
        code, err = repr(error), ""
    assert code == 2 and err.startswith("error:"), (code, err)
    assert not results_dir.exists()


def test_only_folds_trains_the_chosen_fold_and_leaves_the_run_to_finish(tmp_path, cifar10_dir, capsys):
    results_dir = tmp_path / "results"
    args = [f"--flagfile={SMOKE}", f"--results_dir={results_dir}", "--report=false", f"--cifar10_dir={cifar10_dir}",
            "--methods=cleanlab[cleanlab_folds=2]", "--epochs=1", "--train_size=300", "--eval_train_size=64"]
    code, out, err = run_in_process([*args, "--only_folds=1"], capsys)
    assert code == 0, out + err
    assert "without --only_folds" in out and "folds 1 finished" in out
    run_dir, = results_dir.glob("smoke/*")
    assert results.run_state(run_dir / results.FOLDS / "fold1") == "done"
    assert not (run_dir / results.FOLDS / "fold0").exists() and not (run_dir / results.FINAL).exists()
    code, out, _ = run_in_process([*args, "--dry_run"], capsys)
    assert code == 0 and "0 done, 1 to run" in out and "partial" in out, out


def test_misspelled_method_hparam_is_refused(tmp_path, capsys):
    code, out, err = run_in_process([f"--flagfile={SMOKE}", f"--results_dir={tmp_path / 'r'}", "--dry_run",
                                     "--methods=quantization[weight_bit=2]"], capsys)
    assert code == 2 and "weight_bit" in err, out + err


def test_bad_flag_exits_with_status_2_through_app_run(tmp_path, monkeypatch, capsys):
    """The console entry point (absl app.run) turns main's 2 into the process exit status."""
    results_dir = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["run", f"--flagfile={SMOKE}", f"--results_dir={results_dir}",
                                      "--methods=baseline,nonexistent"])
    FLAGS.unparse_flags()
    try:
        with pytest.raises(SystemExit) as exit_info:
            runner.run()
    finally:
        FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: unknown method(s) ['nonexistent']" in err and "Traceback" not in err
    assert not results_dir.exists()


# --------------------------------------------------------------------------------------
# MirroredStrategy over two logical CPUs
# --------------------------------------------------------------------------------------


def test_mirrored_strategy_on_two_logical_cpus_completes(children):
    child = children["mirrored"].wait()
    assert child.returncode == 0, child.stderr[-3000:]
    (run_dir,) = (child.results_dir / "mirrored").iterdir()
    final = results.read_json(run_dir / results.FINAL)
    assert results.read_json(run_dir / results.CONFIG)["strategy"] == "mirrored"
    assert final["epochs_trained"] == 1 and math.isfinite(final["test_accuracy"])
    assert "1 runs in this shard: 0 done, 1 to run" in child.stdout


# --------------------------------------------------------------------------------------
# grid.py parsing
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("4", 4), ("0.1", 0.1), ("1e-3", 1e-3), ("-2", -2), ("true", True), ("False", False),
    ("none", None), ("null", None), ("[8, 8]", [8, 8]), ('{"logits": [8, 8]}', {"logits": [8, 8]}),
    ("blocks", "blocks"), (" head ", "head"), ('"4"', "4"),
])
def test_parse_value(text, expected):
    value = grid.parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_split_top_level_respects_brackets():
    assert grid.split_top_level("a[b,c],d , e,") == ["a[b,c]", "d", "e"]
    assert grid.split_top_level('q[layer_bits={"x": [8, 8]}],b') == ['q[layer_bits={"x": [8, 8]}]', "b"]
    for bad in ("a[b,c", "a]b[", "a{"):
        with pytest.raises(ValueError, match="unbalanced"):
            grid.split_top_level(bad)


def test_parse_assignments():
    assert grid.parse_assignments("blocks_per_stage=1,batchnorm=false,name=x=y") == {
        "blocks_per_stage": 1, "batchnorm": False, "name": "x=y"}
    assert grid.parse_assignments("a=1;b=0.5", ";") == {"a": 1, "b": 0.5}
    with pytest.raises(ValueError, match="key=value"):
        grid.parse_assignments("a=1,b")


def test_parse_methods():
    text = ("baseline, quantization[weight_bits=2;activation_bits=8],"
            "dropout[dropout_rate=0.3;dropout_position=blocks],quantization+early_stopping,"
            'quantization[layer_bits={"logits": [8, 8]}]')
    assert grid.parse_methods(text) == [
        ("baseline", {}),
        ("quantization", {"weight_bits": 2, "activation_bits": 8}),
        ("dropout", {"dropout_rate": 0.3, "dropout_position": "blocks"}),
        ("quantization+early_stopping", {}),
        ("quantization", {"layer_bits": {"logits": [8, 8]}}),
    ]
    for bad, message in (("", "empty"), (" , ", "empty"), ("quant1zation", "cannot read"),
                         ("dropout[0.3]", "key=value")):
        with pytest.raises(ValueError, match=message):
            grid.parse_methods(bad)


def test_expand_settings_of_one_method_are_separate_runs():
    base = {"experiment": "t", "model_kwargs": {"blocks_per_stage": 1}}
    methods = grid.parse_methods("quantization[weight_bits=2],quantization[weight_bits=8],quantization,"
                                 "quantization[weight_bits=4]")
    configs = grid.expand(base, methods, ["symmetric"], [0.4], [0])
    assert [c.resolved_hparams["weight_bits"] for c in configs] == [2, 8, 4]  # the default 4 only once
    assert len({c.run_name for c in configs}) == 3


def test_expand_keeps_distinct_noise_rates():
    configs = grid.expand({"experiment": "t"}, [("baseline", {})], ["symmetric"], [0.12, 0.125], [0])
    assert sorted(c.noise_rate for c in configs) == [0.12, 0.125]


def test_expand_human_noise_has_one_run_per_method_and_seed():
    configs = grid.expand({"experiment": "t"}, [("baseline", {})], ["aggre", "symmetric"], [0.2, 0.4], [0])
    assert [(c.noise_type, c.noise_rate) for c in configs] == [("aggre", 0.0), ("symmetric", 0.2),
                                                              ("symmetric", 0.4)]


def test_expand_refuses_bad_settings_before_anything():
    with pytest.raises(ValueError, match="weight_bits"):
        grid.expand({"experiment": "t"}, [("baseline", {}), ("quantization", {"weight_bits": 9})],
                    ["symmetric"], [0.4], [0])


def test_shard_partitions_and_checks_its_arguments():
    items = list(range(10))
    parts = [grid.shard(items, i, 3) for i in range(3)]
    assert sorted(x for p in parts for x in p) == items
    assert grid.shard(items, 0, 1) == items
    for index, count in ((3, 3), (-1, 3), (0, 0)):
        with pytest.raises(ValueError, match="shard_index"):
            grid.shard(items, index, count)


def test_the_standard_fig3_flagfile_shares_the_standard_folder_and_runs_the_papers_settings():
    standard = grid_for([f"--flagfile={REPO_ROOT / 'experiments' / 'configs' / 'cifar10_standard_n45k.flags'}"])
    fig3 = grid_for([f"--flagfile={REPO_ROOT / 'experiments' / 'configs' / 'cifar10_standard_fig3.flags'}"])
    assert {c.experiment for c in fig3} == {c.experiment for c in standard}
    assert {c.noise_rate for c in fig3} == {0.4} and {c.seed for c in fig3} == {0}
    by_method = collections.defaultdict(set)
    for c in fig3:
        hp = c.resolved_hparams
        by_method[c.method].add({"quantization": lambda: (hp["weight_bits"], hp["activation_bits"]),
                                 "pruning": lambda: (hp["prune_criterion"], hp["prune_ratio"]),
                                 "dropout": lambda: (hp["dropout_rate"], hp["dropout_position"])}[c.method]())
    assert by_method["quantization"] == {(2, 2), (3, 3), (4, 4), (8, 8)}
    assert by_method["pruning"] == {("bn_gamma", r) for r in (0.25, 0.5, 0.75, 0.9)}
    assert {r for r, _ in by_method["dropout"]} == {0.1, 0.3, 0.5} and len(by_method["dropout"]) == 5
    # The default settings are the standard grid's own runs (same run names), so they are not run twice.
    shared = {c.run_name for c in fig3} & {c.run_name for c in standard}
    assert {"symmetric-0.40__quantization__seed0", "symmetric-0.40__pruning_prune_criterion-bngamma__seed0",
            "symmetric-0.40__dropout__seed0"} <= shared


@pytest.mark.parametrize("flagfile", sorted(p.name for p in (REPO_ROOT / "experiments" / "configs").glob("*.flags")))
def test_every_committed_flagfile_builds_its_grid(flagfile):
    """A typo in a committed flagfile (an unknown flag, method, hyper-parameter or noise type) fails here, not
    hours into a queue."""
    configs = grid_for([f"--flagfile={REPO_ROOT / 'experiments' / 'configs' / flagfile}"])
    assert configs and all(c.epochs > 0 and c.experiment for c in configs)


def test_the_n45k_protocol_differs_from_the_standard_one_only_in_its_images_and_folder():
    standard = grid_for([f"--flagfile={REPO_ROOT / 'experiments' / 'configs' / 'cifar10_standard.flags'}"])
    n45k = grid_for([f"--flagfile={REPO_ROOT / 'experiments' / 'configs' / 'cifar10_standard_n45k.flags'}"])
    assert {c.train_size for c in n45k} == {50000} and {c.experiment for c in n45k} == {"recipe_n45k_e20_none"}
    assert {c.method for c in n45k} == {c.method for c in standard}
    key = lambda c: (c.epochs, c.batch_size, c.learning_rate, c.lr_schedule, c.augment, c.validation_fraction)  # noqa: E731
    assert {key(c) for c in n45k} == {key(c) for c in standard}
