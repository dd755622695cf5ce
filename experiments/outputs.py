"""The files one command writes: all of them, or none of them.

A report writes several files into an experiment folder (figures, ``runs.csv``, ``summary.md``). Written one
after the other, a full disk or a folder that turns read-only part-way would leave some of them new and the
rest old. :class:`Outputs` writes each file to a temporary name beside its own (``.tmp-<name>.<random>``) and
renames them all into place only once every one is written; on any error it removes the temporaries, so the
folder keeps the files it had. Renaming needs no space, so a full disk cannot stop it half-way.

A write that fails raises :class:`CannotWrite` naming the file (not the temporary), which the commands turn
into a one-line ``error:`` and exit status 1.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from tfq_noise import results


class CannotWrite(OSError):
    """A command's output file could not be written (read-only folder, full disk...)."""

    def __init__(self, path, error: OSError):
        super().__init__(error.errno, error.strerror or str(error))
        self.path = Path(path)
        self.reason = error.strerror or str(error)

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"


class Outputs:
    """Files to write together: ``with Outputs() as out: out.write(path, writer)``.

    ``writer(temporary_path)`` writes the file's content at the temporary path it is given (with the suffix
    of ``path``, so matplotlib picks the format). On leaving the block without an error every file is renamed
    to its name; with an error none is, and the temporaries are removed.
    """

    def __init__(self):
        self._staged: list[tuple[Path, Path]] = []

    def write(self, path, writer: Callable[[Path], None]) -> None:
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f"{results.TEMP_PREFIX}{target.name}.",
                                        suffix=target.suffix)
            os.close(fd)
        except OSError as error:
            raise CannotWrite(target, error) from None
        self._staged.append((Path(name), target))
        try:
            writer(Path(name))
        except OSError as error:
            raise CannotWrite(target, error) from None

    def text(self, path, text: str) -> None:
        self.write(path, lambda tmp: results.atomic_write_text(tmp, text))

    def commit(self) -> None:
        for tmp, target in self._staged:
            try:
                os.replace(tmp, target)
            except OSError as error:
                raise CannotWrite(target, error) from None
        self._staged = []

    def discard(self) -> None:
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged = []

    def __enter__(self) -> "Outputs":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            try:
                self.commit()
            finally:
                self.discard()  # whatever a failed rename left
        else:
            self.discard()


def save_figure(fig, path, outputs: "Outputs | None", command: str) -> None:
    """Saves a report figure at ``path`` (with ``outputs`` when given: renamed into place with the command's
    other files), recording the folder it was drawn from and ``command``; closes the figure either way."""
    import matplotlib.pyplot as plt

    def save(target):
        results.atomic_save_figure(fig, target, inputs=[Path(path).parent], dpi=120, bbox_inches="tight",
                                   command=command)

    try:
        outputs.write(path, save) if outputs is not None else save(path)
    finally:
        plt.close(fig)
