"""experiments.ferplus_as_folder: FER+ as a CSV for --dataset=folder, one annotator's vote as the label."""

from __future__ import annotations

import csv
import os

import numpy as np

from experiments import ferplus_as_folder
from tfq_noise.data import ferplus, folder


def _read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_labels_are_drawn_votes_and_clean_labels_the_plurality(ferplus_dir, tmp_path, capsys):
    output = tmp_path / "k1.csv"
    assert ferplus_as_folder.main([f"--ferplus_dir={ferplus_dir}", f"--output={output}", "--seed=3"]) == 0
    rows = _read(output)
    assert list(rows[0]) == ["path", "label", "clean_label", "split"]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    filenames, votes = ferplus.read_label_csv(str(ferplus_dir / "FER2013Test" / "label.csv"))
    assert len(test) == int(ferplus.keep_mask(votes).sum())
    assert len(train) > 30_000
    # every label is an emotion the image got a vote for; the clean label is its plurality emotion
    by_name = dict(zip(filenames, votes))
    for row in test:
        v = by_name[os.path.basename(row["path"])]
        assert v[ferplus.EMOTIONS.index(row["label"])] > 0
        assert row["clean_label"] == ferplus.EMOTIONS[int(np.argmax(v[:ferplus.NUM_EMOTIONS]))]
    noise = np.mean([r["label"] != r["clean_label"] for r in train])
    assert 0.15 < noise < 0.35  # one annotator vs the plurality of 10: real crowd noise
    assert f"training label noise {noise:.1%}" in capsys.readouterr().out
    # the folder loader reads it as given: noisy labels, clean labels, the test split
    listing = folder.list_csv(str(output))
    assert listing.class_names == sorted(ferplus.EMOTIONS)
    assert listing.test.sum() == len(test) and listing.clean is not None
    assert np.mean(listing.labels[~listing.test] != listing.clean[~listing.test]) == noise
    # seeded: same seed, same labels; another seed draws other annotators
    again = tmp_path / "again.csv"
    other = tmp_path / "other.csv"
    ferplus_as_folder.main([f"--ferplus_dir={ferplus_dir}", f"--output={again}", "--seed=3"])
    ferplus_as_folder.main([f"--ferplus_dir={ferplus_dir}", f"--output={other}", "--seed=4"])
    assert again.read_bytes() == output.read_bytes() and other.read_bytes() != output.read_bytes()


def test_errors_write_nothing(tmp_path, capsys):
    output = tmp_path / "k1.csv"
    assert ferplus_as_folder.main([f"--ferplus_dir={tmp_path / 'missing'}", f"--output={output}"]) == 1
    assert "does not exist" in capsys.readouterr().err and not output.exists()
    assert ferplus_as_folder.main([f"--ferplus_dir={tmp_path}", f"--output={output}", "--seed=-1"]) == 2
    assert not output.exists() and list(tmp_path.iterdir()) == []
