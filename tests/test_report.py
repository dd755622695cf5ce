"""The report: figures and the Markdown summary from finished runs' files."""

from __future__ import annotations

import json

import pytest

from experiments import report
from tfq_noise import methods, results


def _fake_run(experiment_dir, method, rate, seed, accuracies, hparams=None, noise_type="symmetric"):
    hp = {**methods.default_hparams(method), **(hparams or {})}
    name = f"{noise_type}-{rate}__{method}{''.join(f'_{k}-{v}' for k, v in (hparams or {}).items())}__seed{seed}"
    run_dir = experiment_dir / name
    rows = [{"epoch": e, "loss": 2.0 - 0.1 * e, "test_loss": 1.5 + 0.05 * e, "test_accuracy": a,
             "memorized": 0.1 + 0.02 * e, "corrected": 0.3} for e, a in enumerate(accuracies)]
    results.write_csv(run_dir / results.HISTORY, rows)
    results.write_json(run_dir / results.FINAL, {
        "dataset": "cifar10", "method": method, "noise_type": noise_type, "noise_rate": rate, "seed": seed,
        "hparams": hp, "epochs": len(accuracies), "test_accuracy": accuracies[-1],
        "test_accuracy_last5": sum(accuracies[-5:]) / len(accuracies[-5:]), "best_test_accuracy": max(accuracies),
        "wall_seconds": 60.0, "last_memorized": rows[-1]["memorized"], "data_caveat": "JPEG copy"})


def test_report_writes_figures_and_gains(tmp_path):
    exp = tmp_path / "exp"
    for rate in (0.2, 0.4):
        _fake_run(exp, "baseline", rate, 0, [0.3, 0.4, 0.35, 0.3, 0.3, 0.3])
        _fake_run(exp, "baseline", rate, 1, [0.3, 0.4, 0.35, 0.3, 0.3, 0.4])
        _fake_run(exp, "quantization", rate, 0, [0.3, 0.4, 0.45, 0.5, 0.5, 0.5])
        _fake_run(exp, "quantization", rate, 0, [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],
                  {"weight_bits": 8, "activation_bits": 8})
    _fake_run(exp, "baseline", 0.0, 0, [0.5] * 6, noise_type="aggre")

    summary = report.write_report(exp).read_text()

    for name in ("accuracy_vs_noise.png", "loss_curves.png", "memorization.png", "robustness.png"):
        assert (exp / name).stat().st_size > 10_000, name
        assert f"]({name})" in summary
    # Baseline over two seeds: last epochs 0.30 and 0.40 → 35.0 ± 7.1 (sample std); W4/A4 last epoch 0.50 → +15.0.
    assert "| baseline | 35.0 ± 7.1 (n=2) | 35.0 ± 7.1 (n=2) |" in summary
    assert "| quantization W4/A4 | 50.0 [+15.0] | 50.0 [+15.0] |" in summary
    assert "quantization W8/A8" in summary and "Data caveat: JPEG copy" in summary
    assert "## CIFAR-10N" in summary and "| baseline | 50.0 / 50.0 / 20.0 |" in summary
    for name in ("loss_curves_aggre.png", "memorization_aggre.png"):  # CIFAR-10N curves, one set per label set
        assert (exp / name).stat().st_size > 10_000 and f"]({name})" in summary
    assert "## Against the paper's Fig. 2" in summary
    # Memorization pivots like accuracy (noisy rates only): every fake run ends at 0.1 + 0.02 * 5.
    memorization = summary[summary.index("## Memorization"):]
    assert "| method | s = 20% | s = 40% |" in memorization
    assert "| baseline | 20.0 ± 0.0 (n=2) | 20.0 ± 0.0 (n=2) |" in memorization
    rows = results.read_csv(exp / "runs.csv")
    assert len(rows) == 9 and rows[0]["variant"] == "baseline" and rows[0]["noise_type"] == "aggre"
    w8 = [r for r in rows if r["variant"] == "quantization W8/A8"]
    assert [(r["noise_rate"], r["test_accuracy"]) for r in w8] == [(0.2, 0.3), (0.4, 0.3)]


def test_report_compares_with_the_paper_only_for_symmetric_noise(tmp_path):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6, noise_type="pair")
    assert "Against the paper" not in report.write_report(exp).read_text()


def test_report_compares_symmetric_cifar10_with_the_paper(tmp_path):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6)
    _fake_run(exp, "quantization", 0.4, 0, [0.5] * 5 + [0.4])
    summary = report.write_report(exp).read_text()
    # Paper at s = 40%: 77 → 82 (+5); here 30.0 → 48.0 over the last five epochs (+18.0), +10.0 at the last.
    assert "| 40% | 77 | 82 | +5 | 30.0 | 48.0 | +18.0 | +10.0 |" in summary
    assert "| 80% | 38 | 58 | +20 | — | — | — | — |" in summary


def test_report_refuses_a_missing_folder(tmp_path, capsys):
    assert report.main([str(tmp_path / "nothing")]) == 2
    assert "no experiment folder" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        report.write_report(tmp_path / "nothing")


def test_report_sends_multi_label_experiments_to_table1(tmp_path, capsys):
    exp = tmp_path / "ferplus_k1"
    results.write_json(exp / "run" / results.FINAL, {"dataset": "ferplus", "method": "early_stopping",
                                                      "noise_type": "annotators", "noise_rate": 0.0, "seed": 0,
                                                      "per_task_f1": {"neutral": 0.5}})
    assert report.main([str(exp)]) == 2
    assert "python -m experiments.table1" in capsys.readouterr().err
