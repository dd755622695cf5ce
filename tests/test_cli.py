"""The ``tfq-noise`` console command, in process and as ``pip install .`` installs it: a throwaway virtual
environment over this machine's packages (``--system-site-packages``, ``--no-deps``: nothing is downloaded),
built from a copy of the package's files so the working tree gets no build folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tfq_noise import cli

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command_and_bad_commands_are_refused(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tfq-noise COMMAND")
    for command in ("run", "report", "export", "benchmark", "predict", "find-label-errors", "tune"):
        assert f"\n  {command} " in out, command
    assert cli.main([]) == 2
    assert cli.main(["rnu"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown command 'rnu'; choose one of run, report, export, "
                                               "benchmark, predict, find-label-errors, tune (tfq-noise --help)")


def test_commands_reach_their_modules_from_a_checkout(tmp_path, capsys):
    """Not installed, the experiments come from the working directory (the repository root, as here)."""
    assert cli.import_command("experiments.tables").__name__ == "experiments.tables"
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: no experiment folder at {tmp_path / 'nothing'}"
    for module, _, _ in cli.COMMANDS.values():  # every command names a module of the repository
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), path


def test_a_flagfile_named_by_its_name_is_the_shipped_one(tmp_path, monkeypatch):
    shipped = ROOT / "experiments" / "configs" / "quickstart.flags"
    assert cli.resolve_flagfiles(["--flagfile=quickstart", "--seeds=0"]) == [f"--flagfile={shipped}", "--seeds=0"]
    assert cli.resolve_flagfiles(["--flagfile=quickstart.flags"]) == [f"--flagfile={shipped}"]
    own = tmp_path / "quickstart"
    own.write_text("--epochs=1\n")
    monkeypatch.chdir(tmp_path)  # a file of that name where the command runs wins
    assert cli.resolve_flagfiles(["--flagfile=quickstart"]) == ["--flagfile=quickstart"]
    assert cli.resolve_flagfiles(["--flagfile=nowhere"]) == ["--flagfile=nowhere"]  # left to absl's error


def test_pyproject_lists_every_package():
    """Packages are listed by hand (experiments/ is mapped to tfq_noise.experiments): a new sub-package
    missing from the list would be left out of the install."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "tfq_noise").rglob("__init__.py")}
    found |= {"tfq_noise." + ".".join(p.parent.relative_to(ROOT).parts)
              for p in (ROOT / "experiments").rglob("__init__.py")}
    assert set(setuptools["packages"]) == found
    assert setuptools["package-dir"] == {"tfq_noise.experiments": "experiments"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's bin folder, its site-packages) with the package installed as ``pip install .`` would."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    for name in ("tfq_noise", "experiments"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return venv / "bin", Path(site)


def _run(bin_dir, args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the install provides
    return subprocess.run([str(bin_dir / "tfq-noise"), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def test_the_install_adds_tfq_noise_and_no_top_level_experiments(installed):
    _, site = installed
    assert (site / "tfq_noise" / "experiments" / "run.py").is_file()
    assert (site / "tfq_noise" / "experiments" / "configs" / "quickstart.flags").is_file()
    assert (site / "tfq_noise" / "cli.py").is_file()
    assert not (site / "experiments").exists()
    tops = {p.name for p in site.iterdir()}
    assert not {n for n in tops if n.split("-")[0] in ("experiments", "tests")}, tops


def test_the_installed_command_runs_outside_the_repository(installed, tmp_path):
    bin_dir, site = installed
    done = _run(bin_dir, ["--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "find-label-errors" in done.stdout and "tune" in done.stdout
    done = _run(bin_dir, ["run", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--flagfile" in done.stdout and "Methods (--methods" in done.stdout
    # A shipped flag file by its name; --dry_run lists the grid and writes nothing.
    done = _run(bin_dir, ["run", "--flagfile=quickstart", "--dry_run", f"--results_dir={tmp_path / 'r'}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "quickstart: 2 runs" in done.stdout and not (tmp_path / "r").exists()
    done = _run(bin_dir, ["report", str(tmp_path / "nothing")], tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == f"error: no experiment folder at {tmp_path / 'nothing'}"
