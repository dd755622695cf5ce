"""README.md's result tables are generated from committed files: each generated block must equal what
``python -m experiments.report DIR --readme`` (or ``experiments.recipes``) gives now, and every figure the
README shows must exist. A hand edit of a figure, or a committed run that changed, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments import report

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "README.md").read_text()
BLOCKS = report.readme_blocks(TEXT)


def test_readme_has_generated_blocks():
    assert {"results/cpu_cifar10", "results/cpu_cifar10n", "results/recipe_search"} <= set(BLOCKS)


@pytest.mark.parametrize("directory", sorted(BLOCKS))
def test_readme_block_matches_the_committed_results(directory):
    kind, body = BLOCKS[directory]
    expected = report.generate_block(kind, ROOT / directory, directory)
    assert body == expected, (f"README.md's block for {directory} differs from its committed files: run "
                              f"python -m experiments.{'recipes' if kind == 'recipes' else 'report'} {directory} --readme")


def test_every_figure_in_the_readme_exists():
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", TEXT)
    assert figures
    missing = [f for f in figures if not (ROOT / f).is_file()]
    assert not missing, missing


def test_a_changed_figure_is_caught(tmp_path):
    """The check bites: a README whose table says another number does not match."""
    kind, body = BLOCKS["results/cpu_cifar10"]
    tampered = body.replace("| baseline |", "| baseline | 99.9 |", 1)
    assert tampered != report.generate_block(kind, ROOT / "results/cpu_cifar10", "results/cpu_cifar10")
