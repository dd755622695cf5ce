"""Label-error finding from a run's predictions.npz: ranking, both scorers, measurement, folds, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import find_label_errors as fle
from tfq_noise import results

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = (fle.CSV_NAME, fle.PNG_NAME, fle.JSON_NAME)
CONFIG = {"dataset": "cifar10", "method": "baseline", "noise_type": "symmetric", "noise_rate": 0.3, "seed": 0,
          "train_size": 0, "validation_labels": "noisy"}


def synthetic(n=200, c=10, corrupted_share=0.3, seed=0):
    """Labels with 30% corrupted; the model favours the clean label for most corrupted examples.

    Returns the arrays of a predictions.npz and, apart, the corrupted examples whose probabilities favour their
    clean label (``caught``) and those the model memorized (``memorized``)."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, c, n)
    labels = clean.copy()
    corrupted = np.sort(rng.permutation(n)[:int(round(corrupted_share * n))])
    labels[corrupted] = (clean[corrupted] + rng.integers(1, c, len(corrupted))) % c
    memorized, caught = corrupted[:6], corrupted[6:]  # 6 corrupted examples fitted to their wrong label
    favoured = clean.copy()
    favoured[memorized] = labels[memorized]
    confused = np.setdiff1d(np.arange(n), corrupted)[:8]  # 8 clean examples the model gets wrong, less confidently
    favoured[confused] = (clean[confused] + 1) % c
    probs = rng.dirichlet(np.ones(c), n) * 0.25
    probs[np.arange(n), favoured] += 0.75
    probs[confused] = 0.1 / (c - 2)  # 0.55 on a wrong class, 0.35 on the given one: less suspect than the caught
    probs[confused, favoured[confused]] = 0.55
    probs[confused, labels[confused]] = 0.35
    index = rng.permutation(50_000)[:n]  # positions in the official training set, in no particular order
    arrays = {"train_probs": probs.astype(np.float16), "train_labels": labels, "train_clean_labels": clean,
              "train_corrupted": labels != clean, "train_index": index.astype(np.int64),
              "test_probs": probs[:5].astype(np.float16), "test_labels": clean[:5]}
    return arrays, {"caught": caught, "memorized": memorized, "confused": confused}


def write_run(run_dir: Path, arrays: dict, config: dict | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    results.write_npz(run_dir / results.PREDICTIONS, arrays)
    results.write_json(run_dir / results.CONFIG, config or CONFIG)
    return run_dir


def outputs_in(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith("label_errors") or
                  p.name.startswith(results.TEMP_PREFIX))


def run_ok(argv, capsys) -> str:
    code = fle.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_corrupted_examples_come_first_and_are_measured(tmp_path, capsys):
    arrays, kinds = synthetic()
    run = write_run(tmp_path / "run", arrays)
    out = run_ok([f"--run_dir={run}", "--images=false"], capsys)
    assert outputs_in(run) == [fle.CSV_NAME, fle.JSON_NAME]  # no grid, no temporaries
    rows = results.read_csv(run / fle.CSV_NAME)
    assert len(rows) == 200 and [r["rank"] for r in rows] == list(range(1, 201))
    index = arrays["train_index"]
    caught = set(index[kinds["caught"]].tolist())
    assert {r["index"] for r in rows[:len(caught)]} == caught  # the corrupted examples the model exposes, first
    position = {int(i): j for j, i in enumerate(index)}
    for row in rows:  # every row describes its own example
        j = position[row["index"]]
        assert row["given_label"] == arrays["train_labels"][j] and row["clean_label"] == arrays["train_clean_labels"][j]
        assert row["corrupted"] == int(arrays["train_corrupted"][j])
        assert row["predicted_label"] == int(np.argmax(arrays["train_probs"][j].astype(np.float64)))
        assert row["score"] == pytest.approx(1 - row["p_given"], abs=1e-6)
        assert row["flagged_disagreement"] == int(row["predicted_label"] != row["given_label"])
    summary = results.read_json(run / fle.JSON_NAME)
    assert summary["truth_known"] and summary["corrupted"] == 60 and summary["in_sample"]
    # Disagreement flags 54 caught + 8 confused: precision 54/62, recall 54/60.
    disagreement = summary["scorers"]["disagreement"]
    assert disagreement["flagged"] == 62 and disagreement["true_positives"] == 54
    assert disagreement["precision"] == pytest.approx(54 / 62) and disagreement["recall"] == pytest.approx(0.9)
    assert disagreement["f1"] == pytest.approx(2 * 54 / (62 + 60))
    truth = np.array([r["corrupted"] for r in rows], bool)
    for name in ("cleanlab", "disagreement"):
        flagged = np.array([r[f"flagged_{name}"] for r in rows], bool)
        assert summary["scorers"][name] | fle.flag_metrics(flagged, truth) == summary["scorers"][name]
        assert summary["scorers"][name]["average_precision"] > 0.85
    for word in ("cleanlab", "disagreement", "precision", "60 of 200"):
        assert word in out


def test_precision_recall_f1_and_average_precision_by_hand():
    metrics = fle.flag_metrics([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert metrics == {"flagged": 3, "true_positives": 2, "precision": pytest.approx(2 / 3),
                       "recall": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3)}
    assert fle.flag_metrics([0, 0], [1, 0])["precision"] is None  # nothing flagged
    assert fle.flag_metrics([1, 0], [0, 0])["recall"] is None  # nothing to find
    assert fle.flag_metrics([1, 0], [0, 1])["f1"] == 0.0
    # Positives at ranks 1 and 3: precision 1 and 2/3 at their recall steps.
    assert fle.average_precision(np.array([0.9, 0.8, 0.7, 0.6]), [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert fle.average_precision(np.array([0.9, 0.8]), [0, 0]) is None


def test_tiny_run_against_a_hand_computation(tmp_path, capsys):
    # 8 examples, 3 classes; examples 2 and 5 are mislabeled.
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    clean = np.array([0, 0, 1, 1, 1, 0, 2, 2])
    probs = np.array([[.9, .05, .05], [.6, .3, .1], [.2, .7, .1], [.1, .8, .1],
                      [.45, .4, .15], [.5, .45, .05], [.1, .05, .85], [.3, .2, .5]])
    arrays = {"train_probs": probs.astype(np.float16), "train_labels": labels, "train_clean_labels": clean,
              "train_corrupted": labels != clean, "train_index": np.arange(100, 108)}
    run = write_run(tmp_path / "run", arrays)
    run_ok([f"--run_dir={run}", "--images=false"], capsys)
    disagreement = results.read_json(run / fle.JSON_NAME)["scorers"]["disagreement"]
    # Predicted class differs from the given label at 2 (right), 4 (wrong) and 5 (right).
    assert (disagreement["flagged"], disagreement["true_positives"]) == (3, 2)
    assert disagreement["precision"] == pytest.approx(2 / 3) and disagreement["recall"] == 1.0
    assert disagreement["f1"] == pytest.approx(0.8)
    # Scores 1 - p(given): .1 .4 .8 .2 .6 .55 .15 .5 -> ranks 2 (hit), 4, 5 (hit): AP = (1 + 2/3) / 2.
    assert disagreement["average_precision"] == pytest.approx(5 / 6)
    rows = results.read_csv(run / fle.CSV_NAME)
    cleanlab_rows = [r for r in rows if r["flagged_cleanlab"]]
    assert rows[:len(cleanlab_rows)] == cleanlab_rows  # cleanlab's flags lead the ranking
    rest = [r["index"] for r in rows[len(cleanlab_rows):]]
    by_score = [100 + j for j in (2, 4, 5, 7, 1, 3, 6, 0)]
    assert rest == [i for i in by_score if i in rest]


def test_cleanlab_flags_come_from_the_library_call(tmp_path, capsys, monkeypatch):
    import cleanlab.filter

    arrays, _ = synthetic(seed=3)
    run = write_run(tmp_path / "run", arrays)
    real, calls = cleanlab.filter.find_label_issues, []

    def spy(labels, pred_probs, **kwargs):
        calls.append((labels, pred_probs, kwargs))
        return real(labels, pred_probs, **kwargs)

    monkeypatch.setattr(cleanlab.filter, "find_label_issues", spy)
    run_ok([f"--run_dir={run}", "--images=false"], capsys)
    assert len(calls) == 1 and calls[0][2]["return_indices_ranked_by"] == "self_confidence"
    # The examples are handed over in dataset-index order; the same call here gives the same ranked list.
    order = np.argsort(arrays["train_index"])
    np.testing.assert_array_equal(calls[0][0], arrays["train_labels"][order])
    probs = arrays["train_probs"][order].astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    ranked = real(arrays["train_labels"][order], probs, return_indices_ranked_by="self_confidence")
    assert 0 < len(ranked) < 200
    rows = results.read_csv(run / fle.CSV_NAME)
    assert [r["index"] for r in rows[:len(ranked)]] == arrays["train_index"][order][ranked].tolist()
    assert [r["cleanlab_rank"] for r in rows[:len(ranked)]] == list(range(1, len(ranked) + 1))
    assert sum(r["flagged_cleanlab"] for r in rows) == len(ranked)
    assert all(r["cleanlab_rank"] is None for r in rows[len(ranked):])
    summary = results.read_json(run / fle.JSON_NAME)["scorers"]["cleanlab"]
    assert summary["flagged"] == len(ranked) and "self_confidence" in summary["call"]


def _split(arrays: dict, parts: list[np.ndarray], prefix="train") -> list[dict]:
    out = []
    for rows in parts:
        part = {f"{prefix}_{k}": arrays[f"train_{k}"][rows] for k in ("probs", "labels", "index")}
        if prefix == "train":
            part.update(train_clean_labels=arrays["train_clean_labels"][rows],
                        train_corrupted=arrays["train_corrupted"][rows])
        out.append(part)
    return out


def test_fold_runs_are_assembled_by_dataset_index(tmp_path, capsys):
    arrays, _ = synthetic()
    single = write_run(tmp_path / "single", arrays)
    run_ok([f"--run_dir={single}", "--images=false"], capsys)
    folds = [write_run(tmp_path / f"fold{k}", part)
             for k, part in enumerate(_split(arrays, np.array_split(np.arange(200), 5)))]
    out = tmp_path / "combined"
    run_ok([f"--run_dirs={','.join(map(str, folds))}", f"--output_dir={out}", "--images=false"], capsys)
    combined = results.read_csv(out / fle.CSV_NAME)
    assert {r.pop("runs") for r in combined} == {1}
    assert combined == results.read_csv(single / fle.CSV_NAME)
    assert results.read_json(out / fle.JSON_NAME)["scorers"] == results.read_json(single / fle.JSON_NAME)["scorers"]


def test_overlapping_runs_are_refused_unless_averaged(tmp_path, capsys):
    arrays, _ = synthetic()
    other = dict(arrays, train_probs=np.full((200, 10), 0.1, np.float16))
    a, b = write_run(tmp_path / "a", arrays), write_run(tmp_path / "b", other)
    out = tmp_path / "out"
    assert fle.main([f"--run_dirs={a},{b}", f"--output_dir={out}", "--images=false"]) == 2
    assert "--combine=mean" in capsys.readouterr().err and not out.exists()
    run_ok([f"--run_dirs={a},{b}", f"--output_dir={out}", "--images=false", "--combine=mean"], capsys)
    row = results.read_csv(out / fle.CSV_NAME)[0]
    j = int(np.flatnonzero(arrays["train_index"] == row["index"])[0])
    p = arrays["train_probs"][j].astype(np.float64)
    assert row["runs"] == 2 and row["p_given"] == pytest.approx((p / p.sum())[row["given_label"]] / 2 + 0.05, abs=1e-4)


@pytest.mark.filterwarnings("ignore:May not flag all label issues")  # 50 examples for 10 classes
def test_out_of_sample_folds_from_validation_splits(tmp_path, capsys):
    """Fold k validates on part k and trains on the rest: its val arrays are out-of-sample, and the clean
    labels of part k come from the other folds' training arrays."""
    arrays, _ = synthetic()
    parts = np.array_split(np.arange(200), 4)
    runs = []
    for k in range(4):
        train_rows = np.concatenate([p for i, p in enumerate(parts) if i != k])
        (train,), (val,) = _split(arrays, [train_rows]), _split(arrays, [parts[k]], prefix="val")
        runs.append(write_run(tmp_path / f"fold{k}", {**train, **val}))
    out = tmp_path / "oos"
    text = run_ok([f"--run_dirs={','.join(map(str, runs))}", f"--output_dir={out}", "--images=false",
                   "--split=val"], capsys)
    summary = results.read_json(out / fle.JSON_NAME)
    assert "out-of-sample" in text and not summary["in_sample"]
    assert summary["examples"] == 200 and summary["truth_known"] and summary["corrupted"] == 60
    # One fold alone: the clean labels of its held-out part are in no training array given.
    run_ok([f"--run_dir={runs[0]}", f"--output_dir={tmp_path / 'one'}", "--images=false", "--split=val"], capsys)
    assert not results.read_json(tmp_path / "one" / fle.JSON_NAME)["truth_known"]
    # Clean validation labels are not noisy labels to check.
    results.write_json(runs[1] / results.CONFIG, dict(CONFIG, validation_labels="clean"))
    assert fle.main([f"--run_dir={runs[1]}", "--images=false", "--split=val"]) == 2
    assert "validation_labels=clean" in capsys.readouterr().err


def _object_npz(path: Path):
    with open(path, "wb") as f:
        np.savez(f, train_probs=np.zeros((2, 2)), train_labels=np.array([{"a": 1}, None], dtype=object))


BAD_RUNS = {
    "missing run dir": (None, "no run directory"),
    "no predictions": (lambda path: None, "predates"),
    "truncated npz": (lambda path: path.write_bytes(b"PK\x03\x04" + b"\0" * 40), "damaged"),
    "not an npz": (lambda path: path.write_text("hello"), "damaged"),
    "object arrays": (_object_npz, "object arrays"),
    "mismatched shapes": ("train_labels", "mismatched shapes"),
    "not probabilities": ("train_probs", "not class probabilities"),
    "corrupted mask disagrees": ("train_corrupted", "disagrees"),
    "multi-label": ("multilabel", "multi-label"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_runs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, case):
    damage, message = BAD_RUNS[case]
    run = tmp_path / "run"
    if damage is not None:
        arrays, _ = synthetic()
        if isinstance(damage, str):
            arrays = dict(arrays)
            if damage == "train_labels":
                arrays["train_labels"] = arrays["train_labels"][:-1]
            elif damage == "train_probs":
                arrays["train_probs"] = arrays["train_probs"] * 2
            elif damage == "train_corrupted":
                arrays["train_corrupted"] = ~arrays["train_corrupted"]
            else:
                arrays["train_labels"] = np.zeros((200, 10), np.int64)
            write_run(run, arrays)
        else:
            write_run(run, {})
            (run / results.PREDICTIONS).unlink()
            damage(run / results.PREDICTIONS)
    assert fle.main([f"--run_dir={run}", "--images=false"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err and out == ""
    assert not run.exists() or outputs_in(run) == []


@pytest.mark.parametrize("argv, message", [
    (["--run_dir=x", "--bogus=1"], "unrecognized arguments"),
    (["--images=false"], "one of the arguments --run_dir --run_dirs is required"),
    (["--run_dirs=a,b"], "--run_dirs needs --output_dir"),
    (["--run_dir=x", "--images=maybe"], "expected true or false"),
])
def test_bad_flags_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        fle.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err


def test_command_line_help_and_exit_codes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def command(*argv):
        return subprocess.run([sys.executable, "-m", "experiments.find_label_errors", *argv], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    shown = command("--help")
    assert shown.returncode == 0 and "--run_dirs" in shown.stdout and "--images" in shown.stdout
    missing = command(f"--run_dir={tmp_path / 'nothing'}")
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "no run directory" in missing.stderr


def test_image_grid_needs_cifar10(tmp_path, capsys):
    arrays, _ = synthetic()
    run = write_run(tmp_path / "run", arrays, dict(CONFIG, dataset="ferplus"))
    assert fle.main([f"--run_dir={run}"]) == 2
    assert "--images=false" in capsys.readouterr().err and outputs_in(run) == []
    run = write_run(tmp_path / "run2", arrays)
    assert fle.main([f"--run_dir={run}", f"--cifar10_dir={tmp_path / 'no_cifar'}"]) == 2
    assert "--images=false" in capsys.readouterr().err and outputs_in(run) == []


def test_image_grid_shows_the_top_suspects_from_cifar10(tmp_path, capsys, monkeypatch, cifar10_dir):
    arrays, _ = synthetic(seed=5)
    run = write_run(tmp_path / "run", arrays)
    shown = []
    real = fle.image_grid
    monkeypatch.setattr(fle, "image_grid", lambda images, tiles, path: shown.append((images, tiles)) or
                        real(images, tiles, path))
    run_ok([f"--run_dir={run}", f"--cifar10_dir={cifar10_dir}", "--top=8"], capsys)
    png = run / fle.PNG_NAME
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert outputs_in(run) == sorted(OUTPUTS)
    assert fle.PNG_NAME in results.read_json(run / fle.JSON_NAME)["outputs"]
    (images, tiles), = shown
    rows = results.read_csv(run / fle.CSV_NAME)[:8]
    assert [t["index"] for t in tiles] == [r["index"] for r in rows]
    assert [(t["given"], t["predicted"], t["clean"]) for t in tiles] == [
        (r["given_class"], r["predicted_class"], r["clean_class"]) for r in rows]
    from tfq_noise.data import cifar10

    data = cifar10.load(str(cifar10_dir))
    np.testing.assert_array_equal(images, data.train.images[[r["index"] for r in rows]])
    assert json.loads((run / fle.JSON_NAME).read_text())["top"][0]["index"] == rows[0]["index"]
