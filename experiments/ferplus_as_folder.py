"""FER+ as "your own data": a CSV for ``--dataset=folder``, one crowd annotator's vote as the label.

    python -m experiments.ferplus_as_folder --ferplus_dir=DIR --output=DIR/ferplus_k1.csv [--seed=0]

Writes ``path,label,clean_label,split`` (absolute paths to the FER+ PNGs, emotion names):

* ``label``: the emotion one annotator gave the image, drawn (seeded) among its emotion votes
  (votes for 'unknown' / 'NF' are not drawn), i.e. a real human noisy label;
* ``clean_label``: the plurality of its 10 votes over the 8 emotions (ties: the first emotion in
  :data:`tfq_noise.data.ferplus.EMOTIONS` order);
* ``split``: FER2013Train and FER2013Valid are ``train``, FER2013Test ``test``.

Images whose plurality vote is 'unknown' or 'NF' are left out, as in FER+'s own loaders. The
label noise (share of training rows where ``label != clean_label``) is printed. This is the
single-label view of FER+: one emotion per face, where the multi-task runs (``--dataset=ferplus``)
predict every emotion with >= 2 votes. The file is written whole or not at all.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from tfq_noise import results
from tfq_noise.data import ferplus

SPLIT_OF_FOLDER = {"train": "train", "valid": "train", "test": "test"}


def rows_of_split(folder: str, split: str, rng: np.random.Generator) -> tuple[list[tuple], int]:
    """(path, label, clean_label, split) rows of one FER+ split, and how many images were left out."""
    split_dir = os.path.join(folder, ferplus.SPLIT_FOLDERS[split])
    filenames, votes = ferplus.read_label_csv(os.path.join(split_dir, "label.csv"))
    emotion_votes = votes[:, :ferplus.NUM_EMOTIONS]
    keep = ferplus.keep_mask(votes) & (emotion_votes.sum(axis=1) > 0)
    clean = emotion_votes.argmax(axis=1)
    # one annotator among those who voted for an emotion: a uniform draw over the image's emotion votes
    drawn = rng.random(len(votes)) * emotion_votes.sum(axis=1)
    noisy = (np.cumsum(emotion_votes, axis=1) <= drawn[:, None]).sum(axis=1)
    rows = []
    for name, label, clean_label in zip(filenames[keep], noisy[keep], clean[keep]):
        path = os.path.abspath(os.path.join(split_dir, str(name)))
        rows.append((path, ferplus.EMOTIONS[label], ferplus.EMOTIONS[clean_label], SPLIT_OF_FOLDER[split]))
    return rows, int((~keep).sum())


def write_csv(rows: Sequence[tuple], output: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("path", "label", "clean_label", "split"))
            writer.writerows(rows)

    results.atomic_write(Path(output), write)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.ferplus_as_folder",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--ferplus_dir", default=None,
                        help=f"the unpacked FER+ folder (default ${ferplus.ENV_VAR})")
    parser.add_argument("--output", required=True, help="the CSV to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the annotator draw")
    args = parser.parse_args(argv)
    if args.seed < 0:
        print("ferplus_as_folder: --seed must be >= 0", file=sys.stderr)
        return 2
    try:
        folder = ferplus.resolve_dir(args.ferplus_dir)
        rng = np.random.default_rng(args.seed)
        rows, dropped = [], 0
        for split in ("train", "valid", "test"):
            split_rows, split_dropped = rows_of_split(folder, split, rng)
            rows += split_rows
            dropped += split_dropped
    except (OSError, ValueError) as error:
        print(f"ferplus_as_folder: {error}", file=sys.stderr)
        return 1
    write_csv(rows, args.output)
    train = [r for r in rows if r[3] == "train"]
    noise = np.mean([r[1] != r[2] for r in train])
    print(f"wrote {args.output}: {len(train)} training and {len(rows) - len(train)} test images, "
          f"{dropped} left out (plurality 'unknown'/'NF'); training label noise {noise:.1%} "
          f"(one annotator's vote vs the plurality of 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
