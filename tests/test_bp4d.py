"""BP4D loader, on a generated fixture in the documented layout."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tfq_noise  # noqa: F401
from tfq_noise.data import bp4d

from bp4d_fixture import HEADER_AUS, frame_colour, write_fake_bp4d

SUBJECTS = ("F001", "M001", "F007")
TASKS = ("T1", "T2")


@pytest.fixture
def fake_root(tmp_path):
    truth = write_fake_bp4d(str(tmp_path), SUBJECTS, TASKS)
    return str(tmp_path), truth


def _expected(truth, aus=bp4d.AUS):
    columns = [HEADER_AUS.index(au) for au in aus]
    codes = np.concatenate([truth[(s, t)][1][:, columns] for s in SUBJECTS for t in TASKS])
    frames = np.concatenate([truth[(s, t)][0] for s in SUBJECTS for t in TASKS])
    return frames, codes


def test_layout_labels_and_unknown_mask(fake_root):
    root, truth = fake_root
    data = bp4d.load_frames(root, subjects=SUBJECTS, tasks=TASKS)
    frames, codes = _expected(truth)
    assert len(data) == len(SUBJECTS) * len(TASKS) * 4
    assert data.aus == bp4d.AUS and data.labels.shape == (len(data), 12)
    np.testing.assert_array_equal(data.frames, frames)
    np.testing.assert_array_equal(data.mask, (codes != 9).astype(np.float32))
    np.testing.assert_array_equal(data.labels, (codes == 1).astype(np.float32))
    assert data.labels.dtype == np.float32 and data.mask.dtype == np.float32
    assert (data.mask == 0).any(), "fixture must contain unknown codes"
    assert np.all(data.labels[data.mask == 0] == 0)
    assert data.mask[0, bp4d.AUS.index(1)] == 0  # row 0 has AU1 = 9
    assert list(data.subjects[:8]) == ["F001"] * 8 and list(data.tasks[:4]) == ["T1"] * 4
    for path, frame in zip(data.paths, data.frames):
        assert os.path.isfile(path) and int(os.path.splitext(os.path.basename(path))[0]) == frame
    assert data.num_missing_images == 0


def test_au_header_style_and_au_selection(tmp_path):
    truth = write_fake_bp4d(str(tmp_path), ("M003",), ("T5",), header_style="au")
    data = bp4d.load_frames(str(tmp_path), subjects=("M003",), tasks=("T5",), aus=(24, 1))
    codes = truth[("M003", "T5")][1][:, [HEADER_AUS.index(24), HEADER_AUS.index(1)]]
    np.testing.assert_array_equal(data.mask, (codes != 9).astype(np.float32))
    np.testing.assert_array_equal(data.labels, (codes == 1).astype(np.float32))


def test_configurable_layout(tmp_path):
    layout = bp4d.Bp4dLayout(images_subdir="aligned", labels_subdir="labels", image_extension=".png")
    write_fake_bp4d(str(tmp_path), ("F002",), ("T3",), layout=layout)
    with pytest.raises(FileNotFoundError, match="images_subdir|labels_subdir"):
        bp4d.load_frames(str(tmp_path), subjects=("F002",), tasks=("T3",))
    data = bp4d.load_frames(str(tmp_path), subjects=("F002",), tasks=("T3",), layout=layout)
    assert len(data) == 4 and all(p.endswith(".png") for p in data.paths)


def test_missing_image_is_an_error_unless_skipped(fake_root):
    root, _ = fake_root
    data = bp4d.load_frames(root, subjects=SUBJECTS, tasks=TASKS)
    os.remove(data.paths[5])
    with pytest.raises(FileNotFoundError, match="missing_images='skip'"):
        bp4d.load_frames(root, subjects=SUBJECTS, tasks=TASKS)
    skipped = bp4d.load_frames(root, subjects=SUBJECTS, tasks=TASKS, missing_images="skip")
    assert len(skipped) == len(data) - 1 and skipped.num_missing_images == 1
    assert data.paths[5] not in set(skipped.paths)


def test_missing_sequence_and_bad_inputs(fake_root, tmp_path):
    root, _ = fake_root
    with pytest.raises(FileNotFoundError, match="label CSVs are missing"):
        bp4d.load_frames(root, subjects=SUBJECTS, tasks=("T1", "T8"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bp4d.load_frames(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="missing_images"):
        bp4d.load_frames(root, subjects=SUBJECTS, tasks=TASKS, missing_images="ignore")
    with pytest.raises(ValueError, match="no column for AU"):
        bp4d.load_frames(root, subjects=SUBJECTS, tasks=TASKS, aus=(1, 43))


def test_bad_codes_are_rejected(tmp_path):
    path = tmp_path / "F001_T1.csv"
    path.write_text("0,1,2\n10,0,1\n11,5,9\n")
    with pytest.raises(ValueError, match="AU1 code 5"):
        bp4d.read_au_csv(str(path), aus=(1, 2))
    path.write_text("0,1,2\n10,0,1\n10,1,1\n")
    with pytest.raises(ValueError, match="more than once"):
        bp4d.read_au_csv(str(path), aus=(1, 2))
    path.write_text("0,1,2\n10,0\n")
    with pytest.raises(ValueError, match=":2:"):
        bp4d.read_au_csv(str(path), aus=(1, 2))


def test_subject_folds_are_disjoint_and_cover_all_subjects():
    parts = [set(p) for p in bp4d.SUBJECT_PARTS]
    assert [len(p) for p in bp4d.SUBJECT_PARTS] == [14, 14, 13]
    assert all(len(p) == len(set(p)) for p in bp4d.SUBJECT_PARTS)
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == set(bp4d.SUBJECTS)
    assert len(bp4d.SUBJECTS) == 41 and len(bp4d.FEMALE_SUBJECTS) == 23 and len(bp4d.MALE_SUBJECTS) == 18
    for k in (1, 2, 3):
        train, test = bp4d.cross_validation_subjects(k)
        assert set(test) == parts[k - 1] and not set(train) & set(test)
        assert set(train) | set(test) == set(bp4d.SUBJECTS)
    with pytest.raises(ValueError, match="test_part"):
        bp4d.cross_validation_subjects(0)


def test_lazy_image_dataset_reads_the_right_files(fake_root):
    root, _ = fake_root
    data = bp4d.load_frames(root, subjects=SUBJECTS, tasks=TASKS)
    dataset = bp4d.make_image_dataset(data, batch_size=5, training=False, image_size=(6, 8))
    images, labels, masks = [np.concatenate(x) for x in zip(*dataset.as_numpy_iterator())]
    assert images.shape == (len(data), 6, 8, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(labels, data.labels)
    np.testing.assert_array_equal(masks, data.mask)
    for i in range(len(data)):
        s, t = SUBJECTS.index(data.subjects[i]), TASKS.index(data.tasks[i])
        colour = np.array(frame_colour(s, t, int(data.frames[i]))) / 255.0
        np.testing.assert_allclose(images[i].mean(axis=(0, 1)), colour, atol=3 / 255)
    shuffled = bp4d.make_image_dataset(data, batch_size=5, training=True, image_size=(6, 8), seed=1)
    shuffled_labels = np.concatenate([b[1] for b in shuffled.as_numpy_iterator()])
    assert sorted(map(tuple, shuffled_labels)) == sorted(map(tuple, data.labels))
