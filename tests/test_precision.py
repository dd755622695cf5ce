"""float32 against bfloat16 twins: pairing, the harmless rule, the verdict, and that other tables leave the
bfloat16 runs out."""

from __future__ import annotations

import pytest

from experiments import blocks, docs, precision, recipes, remedies, tables
from tfq_noise import methods, results


def _run(run_dir, method, rate, seed, accuracy, *, precision_name="float32", in_final=False, epoch_seconds=30.0,
         cpu="CPU A", memorized=0.5, gap=0.01):
    results.write_csv(run_dir / results.HISTORY,
                      [{"epoch": e, "epoch_seconds": epoch_seconds, "test_accuracy": accuracy} for e in range(3)])
    results.write_json(run_dir / results.CONFIG, {"epochs": 3, "precision": precision_name})
    results.write_json(run_dir / results.PROVENANCE, {"data": {"train_examples": 1000}, "machine": {"cpu": cpu}})
    final = {"dataset": "cifar10", "method": method, "noise_type": "symmetric", "noise_rate": rate, "seed": seed,
             "hparams": methods.default_hparams(method), "epochs": 3, "epochs_trained": 3, "test_accuracy": accuracy,
             "last_memorized": memorized, "last_mode_gap": gap, "wall_seconds": 3 * epoch_seconds,
             "best_test_accuracy": accuracy + 0.02, "test_accuracy_last5": accuracy}
    if in_final:  # runs written since final.json records the precision; older ones: config.json only
        final["precision"] = precision_name
    results.write_json(run_dir / results.FINAL, final)


BF16 = "mixed_bfloat16"


def _experiment(tmp_path, bf16_baseline=(0.41, 0.39), bf16_quant=(0.60, 0.62), rates=(0.0, 0.4)):
    exp = tmp_path / "exp"
    for rate in rates:
        for seed, (base, quant) in enumerate([(0.40, 0.60), (0.38, 0.62), (0.42, 0.61)]):
            _run(exp / f"b{rate}_{seed}", "baseline", rate, seed, base, cpu="AMD")
            _run(exp / f"q{rate}_{seed}", "quantization", rate, seed, quant, cpu="AMD")
        for seed, (base, quant) in enumerate(zip(bf16_baseline, bf16_quant)):
            _run(exp / f"bb{rate}_{seed}", "baseline", rate, seed, base, precision_name=BF16, in_final=seed == 1,
                 epoch_seconds=15.0, cpu="Intel")
            _run(exp / f"qb{rate}_{seed}", "quantization", rate, seed, quant, precision_name=BF16, cpu="Intel")
    return exp


def _comparisons(exp):
    return {(c.label, c.setting[1]): c for c in precision.compare(tables.ExperimentTables.load(exp))}


def test_twins_are_paired_by_seed_and_judged_against_the_float32_spread(tmp_path):
    found = _comparisons(_experiment(tmp_path))
    assert set(found) == {("baseline", 0.0), ("quantization W4/A4", 0.0), ("baseline", 0.4),
                          ("quantization W4/A4", 0.4)}
    base = found[("baseline", 0.4)]
    # Seeds 0 and 1: 41 − 40 = +1, 39 − 38 = +1; float32 spread: std(40, 38, 42) = 2.0.
    assert base.difference.mean == pytest.approx(1.0) and base.difference.n == 2 and base.difference.gains == 2
    assert base.spread == pytest.approx(2.0)
    assert base.reference.accuracy[2] == 3 and base.other.accuracy[2] == 2
    assert base.harmless is True
    assert base.pairs == {0: (pytest.approx(40.0), pytest.approx(41.0)), 1: (pytest.approx(38.0), pytest.approx(39.0))}
    # Different CPUs: no speed ratio from these runs.
    assert base.speed_ratio is None and base.other.cpus == ("Intel",)
    assert precision.verdict(list(found.values())).startswith("Verdict: mixed_bfloat16 is harmless")


def test_a_difference_beyond_the_spread_is_harmful_and_the_grid_keeps_float32(tmp_path):
    # W4/A4 float32 spread: std(60, 62, 61) = 1.0; bf16 seeds lose 5 and 4 points.
    found = _comparisons(_experiment(tmp_path, bf16_quant=(0.55, 0.58)))
    quant = found[("quantization W4/A4", 0.4)]
    assert quant.difference.mean == pytest.approx(-4.5) and quant.harmless is False
    text = precision.verdict(list(found.values()))
    assert "not harmless" in text and "quantization W4/A4 at s = 40%" in text and "keeps float32" in text


def test_the_verdict_waits_for_two_seeds_on_each_required_setting(tmp_path):
    # One paired seed, even 10 points off, is not judged yet.
    found = _comparisons(_experiment(tmp_path, bf16_baseline=(0.41,), bf16_quant=(0.50,), rates=(0.4,)))
    assert found[("quantization W4/A4", 0.4)].difference.mean == pytest.approx(-10.0)
    assert found[("quantization W4/A4", 0.4)].harmless is None
    text = precision.verdict(list(found.values()))
    assert text.startswith("Verdict pending") and "baseline at s = 0%" in text and "baseline at s = 40%" in text


def test_speed_ratio_only_on_one_cpu_model(tmp_path):
    exp = tmp_path / "exp"
    for seed in (0, 1):
        _run(exp / f"b{seed}", "baseline", 0.4, seed, 0.4, epoch_seconds=80.0, cpu="Intel")
        _run(exp / f"bb{seed}", "baseline", 0.4, seed, 0.4, precision_name=BF16, epoch_seconds=40.0, cpu="Intel")
    [c] = precision.compare(tables.ExperimentTables.load(exp))
    assert c.speed_ratio == pytest.approx(0.5)
    assert c.difference.mean == pytest.approx(0.0) and c.harmless is True  # zero spread, zero difference


def test_other_tables_show_bfloat16_runs_as_rows_of_their_own(tmp_path):
    exp = _experiment(tmp_path, bf16_baseline=(0.90, 0.90))  # bf16 twins that would move the float32 means
    loaded = tables.ExperimentTables.load(exp)
    assert len(loaded.finals) == 20
    assert [f["seed"] for f in loaded.synthetic["baseline"][0.4]] == [0, 1, 2]
    assert [f["seed"] for f in loaded.synthetic["baseline [bf16]"][0.4]] == [0, 1]
    # A precision read from final.json (seed 1) or, for older runs, from config.json (seed 0).
    assert {f["precision"] for f in loaded.synthetic["baseline [bf16]"][0.4]} == {BF16}
    block = tables.readme_block(exp, "exp")
    assert "| baseline | 40.0 ± 2.0 (n=3) | 40.0 ± 2.0 (n=3) |" in block
    assert "| baseline [bf16] | 90.0 ± 0.0 (n=2) | 90.0 ± 0.0 (n=2) |" in block
    assert "[bf16]: 8 runs in mixed_bfloat16" in block and "python -m experiments.precision exp" in block
    assert not tables.is_default_variant("baseline [bf16]")
    [(_, grouped)] = [s for s in remedies._settings(loaded) if s[0] == "s = 40%"]
    rows = {r.label: r for r in remedies.setting_rows(grouped)[0]}
    assert rows["baseline [bf16]"].versus["baseline"].mean == pytest.approx(51.0)  # 90 − 40, 90 − 38
    assert len(grouped["baseline"]) == 3
    # The recipe search reads the float32 seed-0 baseline, not its bfloat16 twin.
    assert recipes.recipe_row(exp)["clean_accuracy"] == pytest.approx(0.40)
    kept, other = results.main_precision([{"precision": "float32"}, {"precision": BF16}, {"run_dir": str(exp / "bb0.4_0")}])
    assert kept == [{"precision": "float32"}] and len(other) == 2


def test_an_all_bfloat16_experiment_has_no_twins(tmp_path):
    exp = tmp_path / "exp"
    _run(exp / "b0", "baseline", 0.4, 0, 0.4, precision_name=BF16)
    loaded = tables.ExperimentTables.load(exp)
    assert list(loaded.synthetic) == ["baseline [bf16]"]
    assert precision.compare(loaded) == []
    assert recipes.recipe_row(exp)["final"] == pytest.approx(0.4)  # the only precision is the main one


def test_markdown_figure_readme_block_and_command(tmp_path, capsys, monkeypatch):
    exp = _experiment(tmp_path)
    summary = precision.write(exp).read_text()
    assert (exp / precision.FIGURE).stat().st_size > 10_000
    assert "| baseline | s = 40% | 40.0 ± 2.0 (n=3) | 40.0 ± 1.4 (n=2) | +1.0 ± 0.0 (2/2 > 0) | 2.0 | yes |" in summary
    assert "30 (AMD) | 15 (Intel) | — |" in summary
    monkeypatch.chdir(tmp_path)  # block folders are paths from where the command runs
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- precision:begin exp -->\nstale 99.9\n<!-- precision:end exp -->\nb\n")
    assert blocks.update_markdown("exp", readme, "precision", precision.readme_block)
    body = blocks.readme_blocks(readme.read_text())[("precision", "exp")]
    assert "stale 99.9" not in body and "Verdict: mixed_bfloat16 is harmless" in body
    assert body == docs.generate_block("precision", exp, "exp")
    assert precision.main([str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
