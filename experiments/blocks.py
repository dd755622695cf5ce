"""Generated blocks of the Markdown pages (README.md, docs/*.md): result tables written by the command that
computes them, never by hand.

A block is the text between two markers that name its kind and the results folder it is drawn from::

    <!-- report:begin results/cpu_cifar10 -->
    ...
    <!-- report:end results/cpu_cifar10 -->

The kind says which command writes it (:data:`KINDS`); the folder is a path from the repository root, where
every command runs. ``python -m experiments.report DIR --readme`` rewrites DIR's report blocks in README.md,
``--readme=docs/results.md`` those of another page; each command of :data:`KINDS` takes the same option.

This module is the one that knows the markers: it finds blocks and rewrites them with the text a generator
gives. It imports no generator: each command hands it its own ``readme_block``, so the generators use it
without an import cycle; :mod:`experiments.docs` maps every kind to its generator (to check or rewrite every
block of a page at once).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from tfq_noise import results

from .outputs import CannotWrite

# Kind → the command that writes its blocks ({dir}: the block's folder).
KINDS = {
    "report": "python -m experiments.report {dir}",
    "recipes": "python -m experiments.recipes {dir}",
    "labelerrors": "python -m experiments.label_error_study EXPERIMENT --output_dir={dir}",
    "remedies": "python -m experiments.remedies {dir}",
    "precision": "python -m experiments.precision {dir}",
    "qatmap": "python -m experiments.qat_map {dir}",
    "fig3": "python -m experiments.fig3 {dir}",
    "headline": "python -m experiments.headline {dir}",
    "shipped": "python -m experiments.shipped {dir}",
}
README = "README.md"
BLOCK = re.compile(rf"(<!-- (?P<kind>{'|'.join(KINDS)}):begin (?P<dir>\S+) -->\n)(?P<body>.*?)"
                   r"(<!-- (?P=kind):end (?P=dir) -->)", re.S)

# generate(folder on disk, the folder as the page names it, the page) -> the block's text
Generator = Callable[[Path, str, str], str]


def readme_blocks(text: str) -> dict[tuple[str, str], str]:
    """{(kind, results folder): block text} for every generated block of a page."""
    return {(m.group("kind"), m.group("dir")): m.group("body") for m in BLOCK.finditer(text)}


def readme_option(markdown: str | Path = README) -> str:
    """How a command's ``--readme`` option names ``markdown``: ``--readme`` for README.md, else ``--readme=FILE``."""
    markdown = Path(markdown).as_posix()
    return "--readme" if markdown == README else f"--readme={markdown}"


def folder_key(directory) -> str:
    """A results folder as the markers name it: its path as given, normalized (``./a/b/`` → ``a/b``)."""
    return Path(os.path.normpath(str(directory))).as_posix()


def update_markdown(directory, markdown: str | Path, kind: str, generate: Generator) -> bool:
    """Rewrites every block of ``kind`` for ``directory`` in the page ``markdown`` with ``generate``'s text;
    False if the page has none. ``directory`` is read where it is (relative to the working directory, the
    repository root). Raises FileNotFoundError for a missing page, :class:`~experiments.outputs.CannotWrite`
    when it cannot be rewritten (it is then left as it was)."""
    path = Path(markdown)
    if not path.is_file():
        raise FileNotFoundError(f"no Markdown page at {path}")
    key = folder_key(directory)
    text = path.read_text()
    if (kind, key) not in readme_blocks(text):
        return False
    page = Path(os.path.relpath(path)).as_posix()  # as the command line names it, from the repository root

    def replace(match):
        if match.group("dir") != key or match.group("kind") != kind:
            return match.group(0)
        return match.group(1) + generate(Path(directory), key, page) + match.group(5)

    new = BLOCK.sub(replace, text)
    if new != text:
        try:
            results.atomic_write_text(path, new)
        except OSError as error:
            raise CannotWrite(path, error) from None
    return True


def add_readme_option(parser: argparse.ArgumentParser, kind: str, what: str = "DIR") -> None:
    """``--readme`` (README.md) or ``--readme=FILE``: also rewrite the page's blocks ``<!-- kind:begin DIR -->``.
    Parse with :func:`parse` (a bare ``--readme`` must not take the next argument as its file)."""
    parser.add_argument("--readme", metavar="FILE", default=None,
                        help=f"also rewrite the block <!-- {kind}:begin {what} --> of README.md, or of FILE "
                             f"with --readme=FILE (e.g. --readme=docs/results.md)")


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None):
    """``parser.parse_args`` with a bare ``--readme`` meaning README.md; returns ``(args, None)``, or
    ``(None, exit status)`` where argparse stopped (bad arguments: 2, ``--help``: 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [f"--readme={README}" if a == "--readme" else a for a in argv]
    try:
        return parser.parse_args(argv), None
    except SystemExit as stop:
        return None, stop.code if isinstance(stop.code, int) else 2


def rewrite(directory, markdown, kind: str, generate: Generator) -> int:
    """The ``--readme`` step of a command: 0, or 2 with a message when the page has no such block."""
    if not update_markdown(directory, markdown, kind, generate):
        print(f"error: {markdown} has no block <!-- {kind}:begin {folder_key(directory)} -->", file=sys.stderr)
        return 2
    return 0


def guarded(action: Callable[[], int | None]) -> int:
    """Runs a command's work; a file it cannot write is exit status 1, bad input (a missing or damaged
    folder, a run that is not one, no runs) 2, each with a one-line ``error:`` message."""
    try:
        return action() or 0
    except CannotWrite as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:  # FileNotFoundError, results.DamagedFile, tables.BadRun, NoRuns...
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def folder_command(argv, prog: str, description: str, kind: str, write: Callable, generate: Generator,
                   example: str) -> int:
    """The command line of a writer of an experiment folder's files and of its blocks of ``kind``:
    ``prog DIR [--readme[=FILE]]``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("experiment_dir", help=f"an experiment folder, e.g. {example}")
    add_readme_option(parser, kind)
    args, status = parse(parser, argv)
    if args is None:
        return status

    def work():
        write(args.experiment_dir)
        return rewrite(args.experiment_dir, args.readme, kind, generate) if args.readme else 0

    return guarded(work)
