"""The remedies table: accuracy, paired differences and cost of every method, from finished runs' files."""

from __future__ import annotations

import shutil

import pytest

from experiments import blocks, remedies
from tfq_noise import methods, results


def _run(run_dir, method, rate, seed, accuracy, *, train_examples=1000, epochs=4, epoch_seconds=30.0,
         trainings=None, memorized=0.5, data_filter=None):
    results.write_csv(run_dir / results.HISTORY,
                      [{"epoch": e, "epoch_seconds": epoch_seconds, "test_accuracy": accuracy} for e in range(epochs)])
    results.write_json(run_dir / results.CONFIG, {"epochs": epochs})
    results.write_json(run_dir / results.PROVENANCE, {"data": {"train_examples": train_examples}})
    final = {"dataset": "cifar10", "method": method, "noise_type": "symmetric", "noise_rate": rate, "seed": seed,
             "hparams": methods.default_hparams(method), "epochs": epochs, "epochs_trained": epochs,
             "test_accuracy": accuracy, "test_accuracy_last5": accuracy, "best_test_accuracy": accuracy,
             "wall_seconds": epochs * epoch_seconds, "last_memorized": memorized}
    if trainings is not None:
        final["trainings"] = trainings
    if data_filter is not None:
        final["data_filter"] = data_filter
    results.write_json(run_dir / results.FINAL, final)


def _experiment(tmp_path):
    exp = tmp_path / "exp"
    for seed, (base, quant, gce) in enumerate([(0.40, 0.60, 0.55), (0.38, 0.61, 0.62)]):
        _run(exp / f"b{seed}", "baseline", 0.4, seed, base, memorized=0.9)
        _run(exp / f"q{seed}", "quantization", 0.4, seed, quant, memorized=0.1)
        _run(exp / f"g{seed}", "gce", 0.4, seed, gce)
    # Early stopping stops after 2 of 4 epochs: half the images of a baseline training.
    _run(exp / "e0", "early_stopping", 0.4, 0, 0.45, epochs=2, epoch_seconds=60.0)
    # Confident learning: 5 folds of 800 images × 4 epochs, then 900 kept images × 4 epochs.
    clean = exp / "c0"
    for k in range(5):
        _run(clean / "folds" / f"fold{k}", "baseline", 0.4, 0, 0.3, train_examples=800, epoch_seconds=20.0)
    _run(clean, "cleanlab", 0.4, 0, 0.5, train_examples=900, trainings=6, data_filter={"cleanlab": {"kept": 900}})
    return exp


def _rows(exp):
    tables = remedies.tables.ExperimentTables.load(exp)
    [(name, grouped)] = remedies._settings(tables)
    assert name == "s = 40%"
    rows, relative, pace = remedies.setting_rows(grouped)
    assert relative
    return {r.label: r for r in rows}, [r.label for r in rows], pace


def test_costs_count_every_training_and_the_images_it_saw(tmp_path):
    rows, order, pace = _rows(_experiment(tmp_path))
    assert rows["baseline"].cost == pytest.approx(1.0)
    assert rows["early_stopping"].cost == pytest.approx(0.5)
    # (5 × 800 × 4 + 900 × 4) / (1000 × 4)
    assert rows["cleanlab"].cost == pytest.approx(4.9)
    assert rows["cleanlab"].trainings == 6 and rows["gce"].trainings == 1
    assert rows["cleanlab"].minutes == pytest.approx((5 * 4 * 20 + 4 * 30) / 60)
    assert rows["baseline"].minutes == pytest.approx(2.0)
    # Baseline first, then best mean accuracy first.
    assert order == ["baseline", "quantization W4/A4", "gce", "cleanlab", "early_stopping"]
    # Minutes per baseline training: 2 for the plain runs, 2 min / 0.5 for early stopping, 520 s / 4.9 for cleanlab.
    assert max(pace) == pytest.approx(4.0) and min(pace) == pytest.approx((520 / 60) / 4.9)


def test_differences_are_paired_by_seed_against_baseline_and_w4a4(tmp_path):
    rows, _, _ = _rows(_experiment(tmp_path))
    gce = rows["gce"]
    # Seeds: 55 − 40 = +15, 62 − 38 = +24 over the baseline; 55 − 60 = −5, 62 − 61 = +1 against W4/A4.
    assert gce.versus["baseline"].mean == pytest.approx(19.5) and gce.versus["baseline"].gains == 2
    assert gce.versus["quantization W4/A4"].mean == pytest.approx(-2.0)
    assert gce.versus["quantization W4/A4"].gains == 1 and gce.versus["quantization W4/A4"].n == 2
    assert rows["early_stopping"].versus["baseline"].n == 1  # only seed 0 is paired
    assert "baseline" not in rows["baseline"].versus
    assert rows["quantization W4/A4"].memorized == pytest.approx(10.0)


def test_the_leader_has_the_best_mean_over_at_least_two_seeds_and_every_row_is_paired_with_it(tmp_path):
    exp = _experiment(tmp_path)
    _run(exp / "m0", "mixup", 0.4, 0, 0.70)  # best mean, but one seed: not the leader while gce has two
    rows, _, _ = _rows(exp)
    assert rows["gce"].leader and not any(r.leader for label, r in rows.items() if label != "gce")
    assert "leader" not in rows["gce"].versus
    assert rows["mixup"].versus["leader"].mean == pytest.approx(15.0) and rows["mixup"].versus["leader"].n == 1
    # Baseline against gce on both seeds: 40 − 55 = −15, 38 − 62 = −24; W4/A4: 60 − 55 = +5, 61 − 62 = −1.
    baseline = rows["baseline"].versus["leader"]
    assert baseline.mean == pytest.approx(-19.5) and baseline.gains == 0
    assert rows["quantization W4/A4"].versus["leader"].mean == pytest.approx(2.0)
    assert rows["quantization W4/A4"].versus["leader"].gains == 1
    # With no remedy on two seeds, the best single-seed one leads; the references never do.
    shutil.rmtree(exp / "g1")
    rows, _, _ = _rows(exp)
    assert rows["mixup"].leader and rows["gce"].versus["leader"].mean == pytest.approx(-15.0)
    only_references = [remedies.Row(label, (60.0, 0.0, 3), {}, None, 1, 1.0, None)
                       for label in (*remedies.REFERENCES, "quantization W4/A4 [bf16]")]
    assert remedies.leader_of(only_references) is None
    assert remedies.setting_table(only_references, True)[0] == "No remedy beside the references: no leader."


def test_markdown_figure_and_readme_block(tmp_path, monkeypatch):
    exp = _experiment(tmp_path)
    summary = remedies.write(exp).read_text()
    assert (exp / remedies.FIGURE).stat().st_size > 10_000
    assert "Leader: `gce`." in summary
    assert ("| gce | 58.5 ± 4.9 (n=2) | +19.5 ± 6.4 (2/2 > 0) | -2.0 ± 4.2 (1/2 > 0) | leader | 50 | 1 | 1.00 | 2 |"
            in summary)
    # Its final training saw only the examples it kept: its memorized share is marked as over those.
    assert "| cleanlab | 50.0 | +10.0 | -10.0 | -5.0 | 50† | 6 | 4.90 | 9 |" in summary
    assert summary.count("†") == 2 and "† Over the corrupted examples the run kept" in summary
    assert "took 2 to 4 minutes across the 8 runs" in summary

    monkeypatch.chdir(tmp_path)  # block folders are paths from where the command runs
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- remedies:begin exp -->\nstale 99.9\n<!-- remedies:end exp -->\nb\n")
    assert blocks.update_markdown("exp", readme, "remedies", remedies.readme_block)
    body = blocks.readme_blocks(readme.read_text())[("remedies", "exp")]
    assert "stale 99.9" not in body and "| cleanlab |" in body
    assert blocks.update_markdown("exp", readme, "report", remedies.readme_block) is False  # no block of that kind


def test_a_missing_fold_or_size_is_an_error(tmp_path, capsys):
    exp = _experiment(tmp_path)
    (exp / "c0" / "folds" / "fold4" / results.FINAL).unlink()
    with pytest.raises(ValueError, match="6 trainings, the folder holds 5"):
        _rows(exp)
    exp = _experiment(tmp_path / "again")
    (exp / "g1" / results.PROVENANCE).unlink()
    assert remedies.main([str(exp)]) == 2
    assert "no training-set size" in capsys.readouterr().err
    assert remedies.main([str(tmp_path / "nothing")]) == 2
