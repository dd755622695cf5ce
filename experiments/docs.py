"""Every generated block of the Markdown pages at once: which generator writes each kind, and a command that
checks or rewrites all of them.

    python -m experiments.docs --check              # README.md and docs/*.md: exit 1 if a block is stale
    python -m experiments.docs                       # rewrite every block of those pages from the committed files
    python -m experiments.docs docs/results.md       # ...of one page

The markers and the rewriting are :mod:`experiments.blocks`'; each folder's command
(``python -m experiments.report DIR --readme`` ...) rewrites its own blocks. Run from the repository root:
block folders are paths from it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import blocks, fig3, headline, label_error_study, precision, qat_map, recipes, remedies, shipped, tables

# Kind → its generator: (folder on disk, the folder as the page names it, the page) → the block's text.
GENERATORS: dict[str, blocks.Generator] = {
    "report": tables.readme_block,
    "recipes": recipes.readme_block,
    "labelerrors": label_error_study.readme_block,
    "remedies": remedies.readme_block,
    "precision": precision.readme_block,
    "qatmap": qat_map.readme_block,
    "fig3": fig3.readme_block,
    "headline": headline.readme_block,
    "shipped": shipped.readme_block,
}


def generate_block(kind: str, directory, name: str, markdown: str = blocks.README) -> str:
    """What a block of ``kind`` holds for ``directory`` (read from its committed files), which the page
    ``markdown`` calls ``name`` (its path from the repository root)."""
    return GENERATORS[kind](Path(directory), name, markdown)


def pages(root: Path = Path(".")) -> list[Path]:
    """The pages that may hold blocks: README.md, every page below docs/ (docs/results/ included) and the shipped
    models' tflite_models/README.md."""
    return [p for p in [root / blocks.README, *sorted((root / "docs").rglob("*.md")), root / "tflite_models" / "README.md"]
            if p.is_file()]


def stale_blocks(markdown: Path, root: Path = Path(".")) -> list[str]:
    """One line per block of the page that differs from what its command gives now (folders read below
    ``root``), naming the command that rewrites it."""
    page = Path(os.path.relpath(markdown, root)).as_posix()
    stale = []
    for (kind, directory), body in sorted(blocks.readme_blocks(Path(markdown).read_text()).items()):
        if body != generate_block(kind, root / directory, directory, page):
            command = blocks.KINDS[kind].format(dir=directory)
            stale.append(f"{page}: the {kind} block of {directory} is stale: run {command} {blocks.readme_option(page)}")
    return stale


def rewrite_page(markdown: Path) -> int:
    """Rewrites every block of the page; returns how many it holds."""
    found = blocks.readme_blocks(Path(markdown).read_text())
    for kind, directory in sorted(found):
        blocks.update_markdown(directory, markdown, kind, GENERATORS[kind])
    return len(found)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", help="Markdown pages (default: README.md and docs/*.md)")
    parser.add_argument("--check", action="store_true", help="only check: exit 1 if a block is stale")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    chosen = [Path(p) for p in args.pages] or pages()
    missing = [str(p) for p in chosen if not p.is_file()]
    if missing:
        print(f"error: no Markdown page at {', '.join(missing)}", file=sys.stderr)
        return 2

    def work():
        if args.check:
            stale = [line for page in chosen for line in stale_blocks(page)]
            print("\n".join(stale) if stale else f"{len(chosen)} pages: every generated block is up to date")
            return 1 if stale else 0
        for page in chosen:
            print(f"{page}: {rewrite_page(page)} blocks rewritten")
        return 0

    return blocks.guarded(work)


if __name__ == "__main__":
    sys.exit(main())
