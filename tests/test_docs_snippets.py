"""Every ```python block of README.md and docs/*.md runs: a page's blocks in order, in one fresh Python process
(a notebook session), at the pages' tiny size (``TFQ_NOISE_DOC_TINY=1``), in a temporary working directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
RUNNER = """
import json, sys
page, blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for number, (line, code) in enumerate(blocks, 1):
    exec(compile(code, f"{page}, block {number} (line {line})", "exec"), namespace)
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the opening fence, code) of every ```python block."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


PAGES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))] if python_blocks(p.read_text())]


def test_the_extractor_finds_the_blocks_and_only_them():
    text = "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny = x + 1\nprint(y)\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (9, "y = x + 1\nprint(y)\n")]
    names = {p.name for p in PAGES}
    assert {"api.md", "your_model.md"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_python_block_of_the_page_runs(page, tmp_path, cifar10_dir):
    name = page.relative_to(ROOT).as_posix()
    (tmp_path / "blocks.json").write_text(json.dumps([name, python_blocks(page.read_text())]))
    (tmp_path / "run_blocks.py").write_text(RUNNER)
    env = {**os.environ, "TFQ_NOISE_DOC_TINY": "1", "MPLBACKEND": "Agg", "TFQ_NOISE_CIFAR10_DIR": str(cifar10_dir),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, str(tmp_path / "run_blocks.py"), str(tmp_path / "blocks.json")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name}: {done.stderr[-4000:]}"
