"""Writes a small fake BP4D tree in the documented layout, for the BP4D loader's tests.

    <root>/<images_subdir>/<subject>/<task>/<frame><ext>   tiny solid-colour images
    <root>/<labels_subdir>/<subject>_<task>.csv            AU occurrence codes

The CSV header is the release's: ``0`` for the frame column, then AU numbers, with
more AUs than the 12 the loader keeps, in the release's order. Codes are 0/1 with
some 9s (unknown). Every image's colour encodes (subject, task, frame), so a test
can check that the right file was read for each label row.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

import tfq_noise  # noqa: F401  (must precede TensorFlow)
import tensorflow as tf

from tfq_noise.data.bp4d import Bp4dLayout

# AU columns of a release CSV (a superset of the 12 evaluated AUs).
HEADER_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 27, 28)


def frame_colour(subject_index: int, task_index: int, frame: int) -> tuple[int, int, int]:
    """The RGB colour of a fixture frame; far apart values so JPEG keeps them distinct."""
    return (40 * subject_index + 20, 60 * task_index + 30, (frame * 37) % 256)


def write_fake_bp4d(
    root: str,
    subjects: Sequence[str] = ("F001", "M001", "F007"),
    tasks: Sequence[str] = ("T1", "T2"),
    num_frames: int = 4,
    first_frame: int = 98,
    image_size: tuple[int, int] = (12, 16),
    layout: Bp4dLayout = Bp4dLayout(),
    header_style: str = "number",
    seed: int = 0,
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Writes the tree; returns ``{(subject, task): (frames [F], codes [F, len(HEADER_AUS)])}``.

    Frame names alternate between zero-padded (``0098``) and plain (``99``), as real
    copies differ. Each sequence also gets one image without a label row (frame
    ``first_frame - 1``), which the loader must ignore. Row 0 of every sequence has
    AU1 unknown (9), and about 10% of the other codes are 9.

    Args:
      header_style: 'number' (``1,2,4``) or 'au' (``AU01,AU02``).
    """
    rng = np.random.default_rng(seed)
    truth: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    image_ext = layout.image_extension.lower()
    for s, subject in enumerate(subjects):
        for t, task in enumerate(tasks):
            folder = os.path.join(root, layout.images_subdir, subject, task)
            os.makedirs(folder, exist_ok=True)
            frames = np.arange(first_frame, first_frame + num_frames)
            codes = rng.integers(0, 2, size=(num_frames, len(HEADER_AUS)))
            codes[rng.random(codes.shape) < 0.1] = 9
            codes[0, HEADER_AUS.index(1)] = 9
            truth[(subject, task)] = (frames, codes)
            for frame in [first_frame - 1, *frames]:
                pixels = np.zeros((*image_size, 3), np.uint8)
                pixels[...] = frame_colour(s, t, int(frame))
                encoded = tf.io.encode_png(pixels) if image_ext == ".png" else tf.io.encode_jpeg(pixels, quality=95)
                name = f"{frame:04d}" if frame % 2 == 0 else str(frame)
                tf.io.write_file(os.path.join(folder, name + layout.image_extension), encoded)
            label_dir = os.path.join(root, layout.labels_subdir)
            os.makedirs(label_dir, exist_ok=True)
            header = [f"AU{au:02d}" if header_style == "au" else str(au) for au in HEADER_AUS]
            # Rows in reverse frame order: the loader must sort them.
            lines = [",".join(["0", *header])]
            lines += [",".join(map(str, [f, *c])) for f, c in zip(frames[::-1], codes[::-1])]
            path = os.path.join(label_dir, layout.label_file.format(subject=subject, task=task))
            with open(path, "w") as handle:
                handle.write("\n".join(lines) + "\n")
    return truth
