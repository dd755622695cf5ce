"""The README and docs/ pages say what the committed files say: every generated block equals what its command
gives now, every figure exists and was drawn from the committed runs as they are now, every relative link
resolves, and the README's verdict quotes only figures of its generated headline table. A hand edit of a
figure, or a committed run that changed, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments import blocks, docs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text()
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = [(page, kind, directory) for page in PAGES
          for kind, directory in sorted(blocks.readme_blocks(page.read_text()))]
FIGURE = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def test_the_pages_hold_the_result_blocks():
    held = {(_name(p), k, d) for p, k, d in BLOCKS}
    assert {("README.md", "headline", "results"),
            ("docs/results/when_qat_helps.md", "qatmap", "results"),
            ("docs/results/standard.md", "recipes", "results/recipe_search"),
            ("docs/results/standard.md", "report", "results/recipe_search/recipe_n45k_e20_none"),
            ("docs/results/standard.md", "remedies", "results/recipe_search/recipe_n45k_e20_none"),
            ("docs/results/protocol_20k.md", "remedies", "results/recipe_search/recipe_n20k_e20_none"),
            ("docs/results/small_data.md", "report", "results/cpu_cifar10"),
            ("docs/results/quickstart.md", "report", "results/examples/quickstart")} <= held


@pytest.mark.parametrize("page, kind, directory", BLOCKS, ids=lambda v: v if isinstance(v, str) else _name(v))
def test_every_block_matches_the_committed_results(page, kind, directory):
    body = blocks.readme_blocks(page.read_text())[(kind, directory)]
    expected = docs.generate_block(kind, ROOT / directory, directory, _name(page))
    command = blocks.KINDS[kind].format(dir=directory)
    assert body == expected, (f"{_name(page)}'s {kind} block for {directory} differs from its committed files: run "
                              f"{command} {blocks.readme_option(_name(page))}")


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_figure_exists_and_is_as_new_as_its_runs(page):
    """Each figure records the results folders it was drawn from and a digest of their runs: a run added or
    rewritten after the figure was drawn fails here until the figure's command redraws it."""
    from tfq_noise import results

    figures = [(page.parent / f).resolve() for f in FIGURE.findall(page.read_text())]
    missing = [str(f) for f in figures if not f.is_file()]
    assert not missing, missing
    stale = [message for f in sorted(set(figures)) if (message := results.stale_figure(f))]
    assert not stale, "\n".join(stale)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_resolves(page):
    targets = [t.split("#", 1)[0] for t in LINK.findall(page.read_text()) + FIGURE.findall(page.read_text())
               if not t.startswith(("http://", "https://", "mailto:", "#"))]
    broken = [t for t in targets if t and not (page.parent / t).exists()]
    assert not broken, f"{_name(page)}: {broken}"


def test_a_changed_block_is_caught():
    """The check bites: a table that says another number does not match."""
    body = blocks.readme_blocks(TEXT)[("headline", "results")]
    tampered = re.sub(r"\+(\d+)\.(\d)", lambda m: f"+{int(m.group(1)) + 1}.{m.group(2)}", body, count=1)
    assert tampered != body
    assert tampered != docs.generate_block("headline", ROOT / "results", "results", "README.md")


def _verdict() -> str:
    return " ".join(TEXT.split("**What the evidence says**", 1)[1].split("\n## ", 1)[0].split())


def test_the_verdict_quotes_only_figures_of_the_headline_table():
    """Every paired difference (signed, with or without its ± std) and every p-value the verdict quotes is in the
    generated headline table, so a new seed that moves a figure fails here until the verdict is updated."""
    table = " ".join(blocks.readme_blocks(TEXT)[("headline", "results")].split())
    verdict = _verdict()
    differences = re.findall(r"\+\d+\.\d(?: ± \d+\.\d)?", verdict)
    assert len(differences) >= 8, differences
    missing = [d for d in differences if f"| {d}" not in table]
    assert not missing, missing
    p_values = re.findall(r"p = (\d\.\d+)", verdict)
    assert p_values and not [p for p in p_values if f"| {p} |" not in table], p_values
    memorized = re.search(r"learns (\d+)% of its wrong labels at s = 40%", verdict).group(1)
    assert f"| {memorized} |" in table


def test_the_verdict_quotes_the_paper_where_it_disagrees():
    paper = ROOT.parent / "shared" / "paper" / "tallec2023_fighting_overfitting_with_quantization.txt"
    quoted = re.search(r'says that "([^"]+)"', _verdict()).group(1)
    if paper.is_file():
        assert quoted.lower() in " ".join(paper.read_text().split()).lower()
    assert "dropout and pruning" in quoted


def test_the_readme_is_short_and_has_its_parts():
    lines = TEXT.splitlines()
    assert len(lines) <= 260, len(lines)
    headings = [line for line in lines if line.startswith("## ")]
    for part in ("## Quantize your own model", "## Set-up: two commands", "## Results", "## A tour",
                 "## Where to go next"):
        assert part in headings, part
    assert TEXT.index("```python") < TEXT.index("## Set-up")


@pytest.mark.parametrize("flagfile, committed", [("quickstart.flags", "results/examples/quickstart"),
                                                   ("ferplus_folder.flags", "results/ferplus_folder")])
def test_the_committed_runs_are_what_their_flagfile_runs(flagfile, committed):
    """The pages describe these folders as their flag file's output: same settings, run by run."""
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
