"""The report: figures and the Markdown summary from finished runs' files."""

from __future__ import annotations

import errno
import json
import os

import pytest

from experiments import blocks, docs, report, tables
from tfq_noise import methods, results


def _fake_run(experiment_dir, method, rate, seed, accuracies, hparams=None, noise_type="symmetric", **extra):
    hp = {**methods.default_hparams(method), **(hparams or {})}
    name = f"{noise_type}-{rate}__{method}{''.join(f'_{k}-{v}' for k, v in (hparams or {}).items())}__seed{seed}"
    run_dir = experiment_dir / name
    rows = [{"epoch": e, "loss": 2.0 - 0.1 * e, "test_loss": 1.5 + 0.05 * e, "test_accuracy": a,
             "memorized": 0.1 + 0.02 * e, "trainmode_memorized": 0.2 + 0.02 * e, "corrected": 0.3}
            for e, a in enumerate(accuracies)]
    results.write_csv(run_dir / results.HISTORY, rows)
    results.write_json(run_dir / results.CONFIG, {"epochs": len(accuracies), "batch_size": 128,
                                                   "learning_rate": 0.001, "lr_schedule": "cosine",
                                                   "augment": "none", "precision": "float32"})
    selects = "early_stopping" in method
    results.write_json(run_dir / results.FINAL, {
        "dataset": "cifar10", "method": method, "noise_type": noise_type, "noise_rate": rate, "seed": seed,
        "hparams": hp, "epochs": len(accuracies), "test_accuracy": extra.get("selected", accuracies[-1]),
        "last_epoch_test_accuracy": accuracies[-1],
        "test_accuracy_last5": None if selects else sum(accuracies[-5:]) / len(accuracies[-5:]),
        "best_test_accuracy": max(accuracies), "wall_seconds": 60.0, "last_memorized": rows[-1]["memorized"],
        "last_trainmode_memorized": rows[-1]["trainmode_memorized"], "last_corrected": 0.3,
        "last_mode_gap": extra.get("gap", 0.01), "data_caveat": "JPEG copy",
        **({"num_outputs": extra["num_outputs"]} if "num_outputs" in extra else {}),
        **({"selected_epoch": extra["selected_epoch"]} if "selected_epoch" in extra else {})})


def _section(summary, title):
    start = summary.index(title)
    ends = [i for i in (summary.find("\n### ", start + 1), summary.find("\n## ", start + 1)) if i > 0]
    return summary[start:min(ends) if ends else None]


def test_report_writes_figures_and_paired_gains(tmp_path):
    exp = tmp_path / "exp"
    for rate in (0.2, 0.4):
        _fake_run(exp, "baseline", rate, 0, [0.3, 0.4, 0.35, 0.3, 0.3, 0.3])
        _fake_run(exp, "baseline", rate, 1, [0.3, 0.4, 0.35, 0.3, 0.3, 0.4])
        _fake_run(exp, "quantization", rate, 0, [0.3, 0.4, 0.45, 0.5, 0.5, 0.5])
        _fake_run(exp, "quantization", rate, 1, [0.3, 0.4, 0.45, 0.5, 0.5, 0.45])
        _fake_run(exp, "quantization", rate, 0, [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],
                  {"weight_bits": 8, "activation_bits": 8})
    _fake_run(exp, "baseline", 0.0, 0, [0.5] * 6, noise_type="aggre")

    summary = report.write_report(exp).read_text()

    for name in ("accuracy_vs_noise.png", "loss_curves.png", "memorization.png", "robustness.png"):
        assert (exp / name).stat().st_size > 10_000, name
        assert f"]({name})" in summary
    accuracy = _section(summary, "### Clean test accuracy at the last epoch")
    # Baseline over two seeds: last epochs 0.30 and 0.40 → 35.0 ± 7.1 (sample std, n − 1).
    assert "| baseline | 35.0 ± 7.1 (n=2) | 35.0 ± 7.1 (n=2) |" in accuracy
    # Paired by seed: W4/A4 − baseline = +20 (seed 0) and +5 (seed 1): +12.5 ± 10.6, both seeds gain. The
    # unpaired difference of means would be the same here, but its spread would not.
    gains = _section(summary, "### Gain over the baseline")
    assert "| quantization W4/A4 | +12.5 ± 10.6 (2/2 > 0) | +12.5 ± 10.6 (2/2 > 0) |" in gains
    assert "| quantization W8/A8 | +0.0 | +0.0 |" in gains  # one seed (0): 0.30 − 0.30
    assert "| baseline |" not in gains
    assert "Data caveat: JPEG copy" in summary
    assert "augmentation none" in summary and "(cosine)" in summary
    assert "### CIFAR-10N" in summary
    for name in ("loss_curves_aggre.png", "memorization_aggre.png"):  # CIFAR-10N curves, one set per label set
        assert (exp / name).stat().st_size > 10_000 and f"]({name})" in summary
    assert "### Against the paper's Fig. 2" in summary
    # Memorization in both modes, with the no-memorization level (1 − 0.3) / 9 = 7.8%.
    memorization = _section(summary, "### Memorization")
    assert "| method | s = 20% | s = 40% |" in memorization
    assert "| baseline | 20 / 30 (8) | 20 / 30 (8) |" in memorization
    drop = _section(summary, "### Over-fitting")
    assert "| baseline | 5.0 ± 7.1 (n=2) | 5.0 ± 7.1 (n=2) |" in drop  # peaks 0.40, finals 0.30 / 0.40
    rows = results.read_csv(exp / "runs.csv")
    assert len(rows) == 11 and rows[0]["variant"] == "baseline" and rows[0]["noise_type"] == "aggre"
    w8 = [r for r in rows if r["variant"] == "quantization W8/A8"]
    assert [(r["noise_rate"], r["test_accuracy"]) for r in w8] == [(0.2, 0.3), (0.4, 0.3)]


def test_unpaired_seeds_are_left_out_of_the_gain(tmp_path):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6)
    _fake_run(exp, "baseline", 0.4, 1, [0.5] * 6)
    _fake_run(exp, "dropout", 0.4, 1, [0.45] * 6)  # seed 1 only: compared with baseline seed 1 alone
    gains = _section(report.write_report(exp).read_text(), "### Gain over the baseline")
    assert "| dropout | -5.0 |" in gains


def test_early_stopping_reports_its_selected_epoch_and_no_last5(tmp_path):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3, 0.5, 0.3, 0.3, 0.3, 0.3])
    _fake_run(exp, "early_stopping", 0.4, 0, [0.3, 0.5, 0.3, 0.3, 0.3, 0.3], selected=0.5)
    summary = report.write_report(exp).read_text()
    assert "| early_stopping | 50.0 |" in _section(summary, "### Clean test accuracy at the last epoch")
    assert "| early_stopping | +20.0 |" in _section(summary, "### Gain over the baseline")
    last5 = _section(summary, "### Mean of the last 5 epochs")
    assert "early_stopping" not in last5 and "| baseline | 34.0 |" in last5  # (0.5 + 4 × 0.3) / 5


def test_memorization_curves_star_the_epoch_an_early_stopped_run_keeps(tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3, 0.5, 0.3, 0.3, 0.3, 0.3], selected_epoch=5)
    _fake_run(exp, "early_stopping", 0.4, 0, [0.3, 0.5, 0.3, 0.3], selected=0.5, selected_epoch=1)
    drawn = {}
    monkeypatch.setattr(report, "_png", lambda fig, path, outputs=None: drawn.setdefault(path.name, fig))
    report.write_report(exp)
    stars = [(int(line.get_xdata()[0]), round(float(line.get_ydata()[0]), 6)) for ax in drawn["memorization.png"].axes
             for line in ax.get_lines() if line.get_marker() == "*" and len(line.get_xdata())]
    # one star per panel, at epoch 2 (0-based 1): memorized 12%, corrected 30%, test accuracy 50%; none for
    # the baseline, which keeps its last epoch
    assert sorted(stars) == [(2, 12.0), (2, 30.0), (2, 50.0)]


def test_report_compares_with_the_paper_only_for_symmetric_noise(tmp_path):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6, noise_type="pair")
    assert "Against the paper" not in report.write_report(exp).read_text()


def test_report_compares_symmetric_cifar10_with_the_paper(tmp_path):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6)
    _fake_run(exp, "quantization", 0.4, 0, [0.5] * 5 + [0.4])
    summary = report.write_report(exp).read_text()
    # Paper at s = 40%: 77 → 82 (+5); here 30.0 → 40.0 at the last epoch, paired gain +10.0 (one seed).
    assert "| 40% | 77 | 82 | +5 | 30.0 | 40.0 | +10.0 |" in summary
    assert "| 80% | 38 | 58 | +20 | — | — | not run |" in summary


def test_labels_as_given_name_their_column_and_memorization_counts_the_classes(tmp_path):
    """A folder dataset trained on its labels as given (noise_type=original, 8 classes): no "s = 0%" column,
    and memorization is reported (those labels can be wrong) against 8 classes, not CIFAR-10's 10."""
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.0, 0, [0.3] * 6, noise_type="original", num_outputs=8)
    _fake_run(exp, "quantization", 0.0, 0, [0.5] * 6, noise_type="original", num_outputs=8)
    summary = report.write_report(exp).read_text()
    assert "s = 0%" not in summary and "| method | labels as given |" in summary
    memorization = _section(summary, "### Memorization at the end")
    assert "Random predictions would give 12.5%" in memorization and "(1 − corrected) / 7." in memorization
    assert "| baseline | 20 / 30 (10) |" in memorization  # memorized 0.1 + 0.02·5; level (1 − 0.3) / 7


def test_readme_block_is_rewritten_in_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the repository root: block folders are paths from it
    exp = tmp_path / "results" / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6)
    _fake_run(exp, "quantization", 0.4, 0, [0.5] * 6)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- report:begin results/exp -->\nstale 99.9\n<!-- report:end results/exp -->\nrest\n")
    assert report.main(["results/exp", "--readme"]) == 0
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    body = blocks.readme_blocks(text)[("report", "results/exp")]
    assert "| quantization W4/A4 | +20.0 |" in body and "report results/exp --readme` from 2" in body
    assert blocks.update_markdown("./results/other/", readme, "report", tables.readme_block) is False


def test_readme_option_targets_another_page(tmp_path, monkeypatch, capsys):
    """``--readme=docs/results.md`` rewrites that page's block (and says so in it), not README.md's."""
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "results" / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6)
    stale = "<!-- report:begin results/exp -->\nstale 99.9\n<!-- report:end results/exp -->\n"
    (tmp_path / "README.md").write_text(stale)
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "results.md"
    page.write_text("# Results\n\n" + stale)
    assert report.main(["results/exp", "--readme=docs/results.md"]) == 0
    assert (tmp_path / "README.md").read_text() == stale
    body = blocks.readme_blocks(page.read_text())[("report", "results/exp")]
    assert body.startswith("Generated by `python -m experiments.report results/exp --readme=docs/results.md` from 1")
    assert body == docs.generate_block("report", exp, "results/exp", "docs/results.md")
    assert docs.stale_blocks(page, tmp_path) == []
    assert docs.stale_blocks(tmp_path / "README.md", tmp_path) == [
        "README.md: the report block of results/exp is stale: run python -m experiments.report results/exp --readme"]
    # python -m experiments.docs checks (exit 1 when stale) and rewrites every block of the pages given.
    assert docs.main(["--check", "docs/results.md"]) == 0
    assert docs.main(["--check", "README.md", "docs/results.md"]) == 1
    assert "README.md: the report block of results/exp is stale" in capsys.readouterr().out
    assert docs.main(["README.md"]) == 0 and docs.main(["--check"]) == 0  # default: README.md and docs/*.md
    assert "stale 99.9" not in (tmp_path / "README.md").read_text()
    (tmp_path / "README.md").write_text(stale)
    capsys.readouterr()
    # A page without the block, or no page at all: exit status 2 and one line naming it.
    assert report.main(["results/exp", "--readme=docs/other.md"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: no Markdown page at docs/other.md"]
    (tmp_path / "docs" / "empty.md").write_text("nothing generated here\n")
    assert report.main(["results/exp", "--readme=docs/empty.md"]) == 2
    assert "docs/empty.md has no block <!-- report:begin results/exp -->" in capsys.readouterr().err


def test_report_refuses_a_missing_folder(tmp_path, capsys):
    assert report.main([str(tmp_path / "nothing")]) == 2
    assert "no experiment folder" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        report.write_report(tmp_path / "nothing")


def test_report_sends_multi_label_experiments_to_table1(tmp_path, capsys):
    exp = tmp_path / "ferplus_k1"
    results.write_json(exp / "run" / results.FINAL, {**SUMMARY, "dataset": "ferplus", "method": "early_stopping",
                                                      "noise_type": "annotators", "noise_rate": 0.0, "epochs": 1,
                                                      "per_task_f1": {"neutral": 0.5}})
    assert report.main([str(exp)]) == 2
    assert "python -m experiments.table1" in capsys.readouterr().err


def test_runs_at_chance_are_called_meaningless(tmp_path):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.101, 0.102])
    _fake_run(exp, "quantization", 0.4, 0, [0.1, 0.104])
    summary = report.write_report(exp).read_text()
    assert "too short or too small to mean anything" in summary
    real = tmp_path / "real"
    _fake_run(real, "baseline", 0.4, 0, [0.3, 0.4, 0.35, 0.3, 0.3, 0.3])
    assert "mean anything" not in report.write_report(real).read_text()


def test_a_runs_own_warning_heads_the_summary(tmp_path):
    """A run that found its data too small for its batch size says so in final.json; the summary says it first."""
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3, 0.4, 0.35, 0.3, 0.3, 0.3])
    _fake_run(exp, "quantization", 0.4, 0, [0.3, 0.4, 0.45, 0.5, 0.5, 0.5])
    final_path = next(exp.glob("*baseline*")) / results.FINAL
    warning = "only 6 training steps in all (43 images, batch 128): lower --batch_size"
    results.write_json(final_path, {**results.read_json(final_path), "warnings": [warning]})
    summary = report.write_report(exp).read_text()
    assert f"**Warning**: {warning}" in summary
    assert summary.index(warning) < summary.index("finished runs")


def test_fig3_at_one_rate_against_the_fewest_changes_setting(tmp_path):
    """The standard protocol's Fig. 3: settings at s = 40% only, the pruning reference being BN-γ pruning at
    the default ratio (no default variant exists), a bfloat16 run not counted as a setting."""
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.4] * 6)
    _fake_run(exp, "pruning", 0.4, 0, [0.45] * 6, {"prune_criterion": "bn_gamma"})
    _fake_run(exp, "pruning", 0.4, 0, [0.5] * 6, {"prune_criterion": "bn_gamma", "prune_ratio": 0.25})
    _fake_run(exp, "quantization", 0.4, 0, [0.6] * 6)
    _fake_run(exp, "quantization", 0.4, 0, [0.55] * 6, {"weight_bits": 2, "activation_bits": 2})
    _fake_run(exp, "baseline", 0.4, 1, [0.4] * 6)
    config = exp / "symmetric-0.4__baseline__seed1" / results.CONFIG
    results.write_json(config, {**results.read_json(config), "precision": "mixed_bfloat16"})
    loaded = report.tables.ExperimentTables.load(exp)
    families = report.robustness_families(loaded.synthetic)
    assert families["pruning"] == ("pruning (prune_criterion=bn_gamma)",
                                   ["pruning (prune_criterion=bn_gamma)", "pruning (prune_criterion=bn_gamma, prune_ratio=0.25)"])
    assert families["quantization"][0] == "quantization W4/A4"
    assert set(families) == {"pruning", "quantization"} and "baseline [bf16]" in loaded.synthetic
    assert report.plot_robustness(loaded.synthetic, tmp_path / "fig3.png")
    assert (tmp_path / "fig3.png").stat().st_size > 10_000


def test_a_filtered_run_marks_its_memorization_as_over_the_examples_it_kept(tmp_path):
    """The cleanlab method drops the examples it flags before its final training: its memorized share counts the
    corrupted examples it kept, and the tables say so beside the figure, not as if it fitted the whole set."""
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3, 0.4, 0.3])
    _fake_run(exp, "cleanlab", 0.4, 0, [0.3, 0.4, 0.5])
    final_path = exp / "symmetric-0.4__cleanlab__seed0" / results.FINAL
    results.write_json(final_path, {**results.read_json(final_path), "data_filter": {"cleanlab": {"kept": 7}}})
    memorization = _section(report.write_report(exp).read_text(), "### Memorization")
    assert "| cleanlab | 14 / 24 (8)† |" in memorization and "| baseline | 14 / 24 (8) |" in memorization
    assert "† Over the corrupted examples the run kept" in memorization
    _fake_run(exp, "cleanlab", 0.4, 0, [0.3, 0.4, 0.5])  # the same run without the filter: no mark, no note
    assert "†" not in report.write_report(exp).read_text()


# ----------------------------------------------------------------------------- bad input, faults


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _written(exp) -> dict:
    """The report's files in the folder (and any temporary), with their bytes."""
    return {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()}


SUMMARY = {"dataset": "cifar10", "method": "baseline", "noise_type": "symmetric", "noise_rate": 0.4, "seed": 0,
           "hparams": {}, "epochs": 6, "test_accuracy": 0.3, "test_accuracy_last5": 0.3, "best_test_accuracy": 0.3,
           "wall_seconds": 60.0}


@pytest.mark.parametrize("final, problem", [
    ({}, "method"),
    ({**SUMMARY, "noise_rate": "forty"}, "noise_rate"),
    ({**SUMMARY, "last_memorized": [0.3]}, "'last_memorized' must be a number or null"),
    ({**SUMMARY, "method": "quantisation"}, "unknown method"),
    ([0.3, 0.4], "a JSON object was expected"),
])
def test_a_final_json_that_is_not_a_runs_summary_is_named_and_nothing_is_written(tmp_path, capsys, final, problem):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6)
    _fake_run(exp, "quantization", 0.4, 0, [0.5] * 6)
    bad = exp / "symmetric-0.4__quantization__seed0" / results.FINAL
    bad.write_text(json.dumps(final))
    assert report.main([str(exp)]) == 2
    line = _one_error_line(capsys)
    assert str(bad) in line and problem in line, line
    assert not (exp / "summary.md").exists() and not (exp / "runs.csv").exists() and not list(exp.glob("*.png"))


def test_a_history_without_losses_is_named(tmp_path, capsys):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6)
    history = exp / "symmetric-0.4__baseline__seed0" / results.HISTORY
    results.write_csv(history, [{"epoch": 0, "test_accuracy": 0.3}])
    assert report.main([str(exp)]) == 2
    line = _one_error_line(capsys)
    assert str(history) in line and "'loss' must be a number" in line
    assert not (exp / "summary.md").exists()


def test_an_empty_folder_has_no_runs_to_report(tmp_path, capsys):
    from experiments import remedies

    exp = tmp_path / "exp"
    (exp / "symmetric-0.4__baseline__seed0").mkdir(parents=True)  # started, never finished
    for command in (report.main, remedies.main):
        assert command([str(exp)]) == 2
        assert "holds no finished runs" in _one_error_line(capsys)
    assert [p.name for p in exp.iterdir()] == ["symmetric-0.4__baseline__seed0"]


def test_a_read_only_folder_is_exit_status_1_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6)
    _fake_run(exp, "quantization", 0.4, 0, [0.5] * 6)
    os.chmod(exp, 0o555)
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):  # what a read-only folder does, also to root (who ignores 0o555)
        if os.path.dirname(os.path.abspath(path)) == str(exp) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    try:
        assert report.main([str(exp)]) == 1
    finally:
        os.chmod(exp, 0o755)
    line = _one_error_line(capsys)
    assert line == f"error: cannot write {exp / 'loss_curves.png'}: Permission denied"  # the first file it writes
    assert sorted(_written(exp)) == []


def test_a_full_disk_is_exit_status_1_and_the_folder_keeps_its_report(tmp_path, capsys, monkeypatch):
    """The disk fills while the report writes its third file: every file stays as the previous report wrote
    it (none half-new), and no temporary is left."""
    exp = tmp_path / "exp"
    _fake_run(exp, "baseline", 0.4, 0, [0.3] * 6)
    _fake_run(exp, "quantization", 0.4, 0, [0.5] * 6)
    report.write_report(exp)
    before = _written(exp)
    assert {"summary.md", "runs.csv", "memorization.png"} <= set(before)
    _fake_run(exp, "quantization", 0.4, 1, [0.6] * 6)  # a new run: every file of the next report differs
    real = results.atomic_write
    calls = []

    def fill_up(path, write, suffix=".tmp"):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write, suffix)

    monkeypatch.setattr(results, "atomic_write", fill_up)
    assert report.main([str(exp)]) == 1
    line = _one_error_line(capsys)
    assert line == f"error: cannot write {exp / 'runs.csv'}: No space left on device"  # its third file
    assert _written(exp) == before
    monkeypatch.setattr(results, "atomic_write", real)
    assert report.main([str(exp)]) == 0  # with room again, the new report replaces the old one
    assert "(n=2)" in (exp / "summary.md").read_text() and _written(exp)["summary.md"] != before["summary.md"]
