"""README.md's result tables are generated from committed files: each generated block must equal what
``python -m experiments.report DIR --readme`` (or ``experiments.recipes``) gives now, and every figure the
README shows must exist and be drawn from the committed runs as they are now. A hand edit of a figure, or a
committed run that changed, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments import report

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "README.md").read_text()
BLOCKS = report.readme_blocks(TEXT)
COMMANDS = {"report": "report", "recipes": "recipes", "labelerrors": "label_error_study EXPERIMENT --output_dir=",
            "remedies": "remedies", "precision": "precision"}


def test_readme_has_generated_blocks():
    assert {("report", "results/cpu_cifar10"), ("report", "results/cpu_cifar10n"), ("recipes", "results/recipe_search"),
            ("remedies", "results/recipe_search/recipe_n20k_e20_none"),
            ("report", "results/recipe_search/recipe_n45k_e20_none"),
            ("remedies", "results/recipe_search/recipe_n45k_e20_none")} <= set(BLOCKS)


@pytest.mark.parametrize("kind, directory", sorted(BLOCKS))
def test_readme_block_matches_the_committed_results(kind, directory):
    body = BLOCKS[(kind, directory)]
    expected = report.generate_block(kind, ROOT / directory, directory)
    assert body == expected, (f"README.md's block for {directory} differs from its committed files: run "
                              f"python -m experiments.{COMMANDS[kind]} {directory} --readme")


def test_every_figure_in_the_readme_exists():
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", TEXT)
    assert figures
    missing = [f for f in figures if not (ROOT / f).is_file()]
    assert not missing, missing


def test_every_figure_in_the_readme_is_as_new_as_its_runs():
    """Each README figure records the results folders it was drawn from and a digest of their runs: a run added
    or rewritten after the figure was drawn fails here until the figure's command redraws it."""
    from tfq_noise import results

    stale = [message for f in sorted(set(re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", TEXT)))
             if (message := results.stale_figure(ROOT / f))]
    assert not stale, "\n".join(stale)


def test_a_changed_figure_is_caught(tmp_path):
    """The check bites: a README whose table says another number does not match."""
    kind, body = "report", BLOCKS[("report", "results/cpu_cifar10")]
    tampered = body.replace("| baseline |", "| baseline | 99.9 |", 1)
    assert tampered != report.generate_block(kind, ROOT / "results/cpu_cifar10", "results/cpu_cifar10")


@pytest.mark.parametrize("flagfile, committed", [("quickstart.flags", "results/examples/quickstart"),
                                                   ("ferplus_folder.flags", "results/ferplus_folder")])
def test_the_committed_runs_are_what_their_flagfile_runs(flagfile, committed):
    """The README describes these folders as their flag file's output: same settings, run by run."""
    from absl import flags

    from experiments import run as runner
    from tfq_noise import results

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["run", f"--flagfile={ROOT / 'experiments' / 'configs' / flagfile}"])
    try:
        grid = runner.build_grid()
    finally:
        flags.FLAGS.unparse_flags()
    committed = ROOT / committed
    assert sorted(c.run_name for c in grid) == sorted(p.name for p in committed.iterdir() if p.is_dir())
    for config in grid:
        assert results.read_json(committed / config.run_name / results.CONFIG) == config.to_dict(), config.run_name


STANDARD = "results/recipe_search/recipe_n45k_e20_none"  # the standard protocol (README, "The standard protocol")


def _remedies_gains(method: str) -> list[str]:
    """The 'vs baseline' column of ``method``'s row at s = 0, 40 and 80% in the standard protocol's generated
    remedies block."""
    body = BLOCKS[("remedies", STANDARD)]
    gains = []
    for rate in ("0%", "40%", "80%"):
        section = body.split(f"#### s = {rate}\n", 1)[1].split("####", 1)[0]
        row = next(line for line in section.splitlines() if line.startswith(f"| {method} |"))
        gains.append(re.sub(r" \(\d+/\d+ > 0\)", "", row.split(" | ")[2]).replace("-", "−"))
    return gains


def test_the_headline_quotes_the_generated_gains():
    """The summary at the top of the README restates the standard protocol's paired gains: it must say what
    the generated block says, so a new seed that moves a figure fails here until the summary is updated."""
    headline = TEXT.split("**What the evidence says so far**", 1)[1].split("\n## ", 1)[0]
    headline = " ".join(headline.split())
    w4a4 = _remedies_gains("quantization W4/A4")
    assert all("±" in gain for gain in w4a4), w4a4
    assert f"by {w4a4[0]}, {w4a4[1]} and {w4a4[2]} points" in headline, w4a4
    w8a8 = _remedies_gains("quantization W8/A8")
    assert f"gains {w8a8[0]}, {w8a8[1]} and {w8a8[2]}." in headline, w8a8
    # The closest generic remedies it names (early stopping at s = 40%, structured pruning at s = 80%).
    stopping, pruning = _remedies_gains("early_stopping")[1], _remedies_gains("pruning (prune_criterion=bn_gamma)")[2]
    assert f"early stopping at s = 40% ({stopping})" in headline, stopping
    assert f"pruning at s = 80% ({pruning})" in headline, pruning
