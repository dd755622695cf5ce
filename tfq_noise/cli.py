"""The ``tfq-noise`` console command (installed by ``pip install .``): one entry point for the project's commands.

    tfq-noise run --flagfile=quickstart          # = python -m experiments.run --flagfile=experiments/configs/quickstart.flags
    tfq-noise report results/quickstart          # = python -m experiments.report results/quickstart
    tfq-noise export --run_dir=...               # = python -m tfq_noise.deploy.export --run_dir=...
    tfq-noise COMMAND --help                     # the command's own flags

Each command is the module named in :data:`COMMANDS`, imported when it is run (the library never imports the
experiments at import time). Installed, the repository's ``experiments/`` folder is the package
``tfq_noise.experiments``; from a checkout that is not installed, the ``experiments`` package of the working
directory (the repository root) is used. ``--flagfile=NAME`` for ``run`` and ``tune`` also finds the flag files
shipped with the package (``experiments/configs/NAME.flags``) when no file NAME exists.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Sequence

# command → (module, how it is called, what it does). "argv": main(argv) -> status; "absl": an absl app that
# reads sys.argv (its flags), "run": experiments.run's own entry function, which reads sys.argv too.
COMMANDS = {
    "run": ("experiments.run", "run", "train a grid of runs from flags or a flag file"),
    "report": ("experiments.report", "argv", "figures and summary.md of an experiment's runs (--readme: its tables)"),
    "export": ("tfq_noise.deploy.export", "argv", "export a finished run as a verified TFLite model"),
    "benchmark": ("tfq_noise.deploy.benchmark", "argv", "CPU latency, throughput and memory of .tflite files"),
    "predict": ("tfq_noise.deploy.predict", "argv", "classify images with an exported .tflite model"),
    "find-label-errors": ("experiments.find_label_errors", "argv", "rank a run's training examples by how likely "
                          "their label is wrong"),
    "tune": ("experiments.tune", "absl", "keras-tuner grid search over a method's settings"),
}
FLAGFILE_COMMANDS = ("run", "tune")
PROG = "tfq-noise"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [ARGS...]", "",
             "Quantization-aware training as a regularizer against noisy labels: the project's commands.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, _, what) in COMMANDS.items()]
    lines += ["", f"{PROG} COMMAND --help shows a command's own options. Exit status: the command's "
              "(0 done, 2 bad input, 1 a failure it reports)."]
    return "\n".join(lines)


def import_command(module: str):
    """The command's module: ``experiments.X`` as ``tfq_noise.experiments.X`` where the package is installed,
    else from the working directory's ``experiments`` package (a checkout)."""
    if module.startswith("experiments."):
        try:
            return importlib.import_module(f"tfq_noise.{module}")
        except ModuleNotFoundError as error:
            if error.name not in ("tfq_noise.experiments", f"tfq_noise.{module}"):
                raise
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # as python -m would
    return importlib.import_module(module)


def experiments_dir() -> Path | None:
    """The folder of the experiments package this command would use (for its shipped flag files), if any."""
    try:
        return Path(import_command("experiments.grid").__file__).parent
    except ModuleNotFoundError:
        return None


def resolve_flagfiles(args: Sequence[str]) -> list[str]:
    """``--flagfile=NAME`` where no file NAME exists but the package ships ``configs/NAME`` or
    ``configs/NAME.flags``: that file. Other arguments are left as they are."""
    out = []
    for arg in args:
        if arg.startswith("--flagfile=") and not Path(arg.split("=", 1)[1]).is_file():
            name = arg.split("=", 1)[1]
            folder = experiments_dir()
            candidates = [] if folder is None else [folder / "configs" / n for n in
                                                    (name, f"{name}.flags", Path(name).name)]
            found = next((c for c in candidates if c.is_file()), None)
            if found is not None:
                arg = f"--flagfile={found}"
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose one of {', '.join(COMMANDS)} ({PROG} --help)",
              file=sys.stderr)
        return 2
    module_name, style, _ = COMMANDS[command]
    if command in FLAGFILE_COMMANDS:
        args = resolve_flagfiles(args)
    module = import_command(module_name)
    if style == "argv":
        return int(module.main(args) or 0)
    saved = sys.argv
    sys.argv = [f"{PROG} {command}", *args]  # absl reads its flags from sys.argv
    try:
        if style == "run":
            module.run()
        else:
            from absl import app

            app.run(module.main)
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)  # a message in place of a status, as sys.exit would print it
        return 1
    finally:
        sys.argv = saved


if __name__ == "__main__":
    sys.exit(main())
