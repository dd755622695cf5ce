"""FER+: targets from votes, annotator sampling, drop rule, decoding and cache."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import tfq_noise  # noqa: F401
import tensorflow as tf

from tfq_noise.data import ferplus

# The first rows of FER2013Test/label.csv (neutral .. contempt, unknown, NF).
FIRST_TEST_ROWS = {
    "fer0032220.png": [0, 0, 0, 0, 2, 1, 0, 7, 0, 0],
    "fer0032222.png": [3, 0, 0, 5, 0, 0, 0, 0, 2, 0],
    "fer0032223.png": [6, 0, 1, 2, 0, 0, 0, 0, 1, 0],
    "fer0032224.png": [0, 0, 4, 0, 1, 2, 3, 0, 0, 0],
}
EXPECTED_REFERENCE = {
    "fer0032220.png": [0, 0, 0, 0, 1, 0, 0, 1],  # anger 2, contempt 7
    "fer0032222.png": [1, 0, 0, 1, 0, 0, 0, 0],
    "fer0032223.png": [1, 0, 0, 1, 0, 0, 0, 0],
    "fer0032224.png": [0, 0, 1, 0, 0, 1, 1, 0],
}


@pytest.fixture(scope="module")
def test_split(ferplus_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ferplus_cache")
    return ferplus.load_split("test", str(ferplus_dir), cache_dir=str(cache)), cache


def test_real_rows_and_reference_targets(ferplus_dir):
    filenames, votes = ferplus.read_label_csv(os.path.join(ferplus_dir, "FER2013Test", "label.csv"))
    assert len(filenames) == 3573 and votes.shape == (3573, 10)
    for i, (name, row) in enumerate(FIRST_TEST_ROWS.items()):
        assert filenames[i] == name and votes[i].tolist() == row
    reference = ferplus.reference_targets(votes[:4], threshold=2)
    assert reference.dtype == np.float32
    assert reference.tolist() == list(EXPECTED_REFERENCE.values())
    assert ferplus.reference_targets(votes[:1], threshold=3).tolist() == [[0, 0, 0, 0, 0, 0, 0, 1]]


def test_loaded_split(test_split, ferplus_dir):
    split, cache = test_split
    assert split.images.shape == (len(split), 48, 48, 1) and split.images.dtype == np.uint8
    assert split.reference.shape == split.noisy.shape == (len(split), 8)
    assert split.votes.shape == (len(split), 10)
    # 28 test images have an 'unknown' or 'NF' plurality.
    assert split.num_dropped == 28 and len(split) == 3573 - 28
    assert np.all(split.votes[:, :8].max(axis=1) >= split.votes[:, 8:].max(axis=1))
    np.testing.assert_array_equal(split.reference, ferplus.reference_targets(split.votes))
    name = split.filenames[3]
    decoded = tf.io.decode_png(tf.io.read_file(os.path.join(ferplus_dir, "FER2013Test", name))).numpy()
    np.testing.assert_array_equal(split.images[3], decoded)
    assert len(os.listdir(cache)) == 1  # decoded images cached as one .npz
    again = ferplus.load_split("test", str(ferplus_dir), cache_dir=str(cache))
    np.testing.assert_array_equal(again.images, split.images)
    np.testing.assert_array_equal(again.noisy, split.noisy)
    report = ferplus.label_disagreement(split.noisy, split.reference)
    assert set(report) == set(ferplus.EMOTIONS) | {"overall", "any"}
    assert 0.03 < report["overall"] < 0.2  # one annotator disagrees with the crowd, but not wildly


def test_drop_rule():
    votes = np.array([
        [5, 0, 0, 0, 0, 0, 0, 0, 5, 0],  # tie emotion/unknown: kept
        [4, 0, 0, 0, 0, 0, 0, 0, 6, 0],  # unknown plurality: dropped
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 8],  # not a face: dropped
        [0, 0, 0, 0, 0, 0, 0, 3, 3, 4],  # NF plurality: dropped
        [2, 2, 2, 0, 0, 0, 0, 0, 2, 2],  # tie: kept
    ])
    assert ferplus.keep_mask(votes).tolist() == [True, False, False, False, True]


def test_single_annotator_sampling_follows_the_votes():
    row = np.array([[3, 4, 0, 0, 0, 0, 0, 1, 2, 0]])
    votes = np.repeat(row, 20_000, axis=0)
    noisy = ferplus.noisy_targets(votes, num_annotators=1, threshold=2, seed=0)
    assert noisy.sum(axis=1).max() == 1  # one vote marks at most one emotion
    np.testing.assert_allclose(noisy.mean(axis=0), row[0, :8] / 10, atol=0.012)
    assert (noisy.sum(axis=1) == 0).mean() == pytest.approx(0.2, abs=0.012)  # 'unknown' slots


def test_sampling_is_reproducible_per_seed():
    votes = np.random.default_rng(0).multinomial(10, np.full(10, 0.1), size=2_000)
    a = ferplus.noisy_targets(votes, 3, 2, seed=4)
    b = ferplus.noisy_targets(votes, 3, 2, seed=4)
    c = ferplus.noisy_targets(votes, 3, 2, seed=5)
    assert a.tobytes() == b.tobytes() and not np.array_equal(a, c)
    sampled = ferplus.sample_annotator_votes(votes, 3, seed=4)
    assert np.all(sampled.sum(axis=1) == 3) and np.all(sampled <= votes)


def test_all_ten_annotators_reproduce_the_reference():
    votes = np.random.default_rng(1).multinomial(10, np.full(10, 0.1), size=500)
    votes[0] = [2, 0, 0, 0, 0, 0, 0, 0, 7, 0]  # 9 recorded votes: one empty slot
    for threshold in (1, 2, 3):
        np.testing.assert_array_equal(
            ferplus.noisy_targets(votes, 10, threshold, seed=0), ferplus.reference_targets(votes, threshold)
        )
    np.testing.assert_array_equal(ferplus.sample_annotator_votes(votes, 10, seed=0), votes)


def test_noisy_vote_threshold_rule():
    table = {(1, 2): 1, (3, 2): 1, (5, 2): 1, (10, 2): 2, (5, 3): 2, (10, 3): 3, (3, 5): 2, (1, 10): 1}
    assert {k: ferplus.noisy_vote_threshold(*k) for k in table} == table
    with pytest.raises(ValueError, match="num_annotators"):
        ferplus.noisy_vote_threshold(11)


def test_disagreement_report():
    noisy = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]], np.float32)
    reference = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]], np.float32)
    report = ferplus.label_disagreement(noisy, reference)
    assert report["neutral"] == 0.5 and report["happiness"] == 0.5 and report["fear"] == 0.0
    assert report["overall"] == 2 / 16 and report["any"] == 0.5


def test_errors(tmp_path, ferplus_dir, monkeypatch):
    monkeypatch.delenv(ferplus.ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=ferplus.ENV_VAR):
        ferplus.load_split("test")
    with pytest.raises(ValueError, match="valid: train, valid, test"):
        ferplus.load_split("dev", str(ferplus_dir))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ferplus.load_split("test", str(tmp_path / "nowhere"))
    # A label.csv naming an image that is not there.
    broken = tmp_path / "ferplus" / "FER2013Test"
    broken.mkdir(parents=True)
    shutil.copy(os.path.join(ferplus_dir, "FER2013Test", "fer0032220.png"), broken)
    (broken / "label.csv").write_text('fer0032220.png,"(0, 0, 48, 48)",0,0,0,0,2,1,0,7,0,0\n'
                                      'fer9999999.png,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0\n')
    with pytest.raises(FileNotFoundError, match="fer9999999.png"):
        ferplus.load_split("test", str(tmp_path), cache_dir=str(tmp_path / "cache"))
    (broken / "label.csv").write_text('fer0032220.png,"(0, 0, 48, 48)",5,5,5,0,0,0,0,0,0,0\n')
    with pytest.raises(ValueError, match="sum to at most 10"):
        ferplus.load_split("test", str(tmp_path), cache_dir=str(tmp_path / "cache"))
    (broken / "label.csv").write_text('fer0032220.png,"(0, 0, 48, 48)",5,5\n')
    with pytest.raises(ValueError, match="4 fields"):
        ferplus.load_split("test", str(tmp_path), cache_dir=str(tmp_path / "cache"))


def test_noisy_label_probability_and_matched_decision_range_by_hand():
    # k = 1: the one sampled vote is the emotion's with probability votes / 10.
    assert ferplus.noisy_label_probability(2, 1) == pytest.approx(0.2)
    # k = 3, one vote of 3 needed: 1 - C(10 - v, 3) / C(10, 3); v = 1: 1 - 84/120, v = 2: 1 - 56/120.
    assert ferplus.matched_decision_range(3, 2) == pytest.approx((0.3, 64 / 120))
    # k = 10 draws every vote: the noisy label is the reference, any threshold in (0, 1] separates it.
    assert ferplus.matched_decision_range(10, 2) == pytest.approx((0.0, 1.0))
    assert ferplus.matched_decision_range(1, 2) == pytest.approx((0.1, 0.2))


def test_vote_share_oracle_is_perfect_only_at_a_matched_threshold(test_split):
    from tfq_noise.tasks import f1_scores

    test = test_split[0]

    def oracle_f1(k, decision_threshold):
        return f1_scores(test.reference, ferplus.vote_share_oracle(test.votes, k, 2, decision_threshold)).mean()

    assert oracle_f1(1, 0.15) == oracle_f1(3, 0.5) == 1.0
    # One annotator at the paper's 0.5 flags only emotions with >= 6 of 10 votes: half the F1 is out of reach.
    assert 0.45 < oracle_f1(1, 0.5) < 0.55
