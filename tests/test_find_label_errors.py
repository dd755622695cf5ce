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
    (["--run_dir=x", "--images=maybe"], "expected true, false or auto"),
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


def test_no_image_grid_where_the_images_are_not_at_hand_unless_required(tmp_path, capsys):
    arrays, _ = synthetic()
    run = write_run(tmp_path / "run", arrays, dict(CONFIG, dataset="ferplus"))
    out = run_ok([f"--run_dir={run}"], capsys)  # --images=auto: the CSV and JSON, no grid, and why
    assert outputs_in(run) == [fle.CSV_NAME, fle.JSON_NAME] and "no image grid: " in out and "ferplus" in out
    assert results.read_json(run / fle.JSON_NAME)["image_grid"] is None
    for directory in (run, tmp_path / "run2"):
        (directory / fle.CSV_NAME).unlink(missing_ok=True)
        (directory / fle.JSON_NAME).unlink(missing_ok=True)
    assert fle.main([f"--run_dir={run}", "--images=true"]) == 2  # required: refused, nothing written
    assert "ferplus" in capsys.readouterr().err and outputs_in(run) == []
    run = write_run(tmp_path / "run2", arrays)
    assert fle.main([f"--run_dir={run}", f"--cifar10_dir={tmp_path / 'no_cifar'}", "--images"]) == 2
    assert "--cifar10_dir" in capsys.readouterr().err and outputs_in(run) == []
    out = run_ok([f"--run_dir={run}", f"--cifar10_dir={tmp_path / 'no_cifar'}"], capsys)
    assert "no image grid: cannot load CIFAR-10" in out and outputs_in(run) == [fle.CSV_NAME, fle.JSON_NAME]


def test_flagged_rows_only(tmp_path, capsys):
    arrays, _ = synthetic()
    run = write_run(tmp_path / "run", arrays)
    run_ok([f"--run_dir={run}", "--images=false", "--rows=flagged"], capsys)
    rows = results.read_csv(run / fle.CSV_NAME)
    summary = results.read_json(run / fle.JSON_NAME)
    flagged = summary["scorers"]["cleanlab"]["flagged"]
    assert rows and all(r["flagged_cleanlab"] or r["flagged_disagreement"] for r in rows)
    assert sum(r["flagged_cleanlab"] for r in rows) == flagged and summary["examples"] == 200
    assert sum(r["flagged_disagreement"] for r in rows) == summary["scorers"]["disagreement"]["flagged"]
    scores = [r["score"] for r in rows[:flagged]]
    assert scores == sorted(scores, reverse=True)  # cleanlab's flags, most suspect first


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


# ----------------------------------------------------------------------------- the library function


def test_library_function_ranks_flags_by_score_and_suggests_the_likeliest_class():
    import cleanlab.filter

    from tfq_noise.label_errors import find_label_errors

    arrays, kinds = synthetic()
    labels = arrays["train_labels"]
    probs = arrays["train_probs"].astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    found = find_label_errors(labels, probs)
    expected = cleanlab.filter.find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    np.testing.assert_array_equal(found.indices, expected)
    assert set(kinds["caught"]) <= set(found.indices.tolist())  # the wrong labels the model exposes are flagged
    assert not set(kinds["memorized"]) & set(found.indices.tolist())  # the memorized ones are not
    np.testing.assert_array_equal(found.given_label, labels[found.indices])
    np.testing.assert_array_equal(found.suggested_label, probs[found.indices].argmax(axis=1))
    np.testing.assert_allclose(found.score, 1 - probs[found.indices, labels[found.indices]])
    assert list(found.score) == sorted(found.score, reverse=True) and len(found) == len(expected)
    names = [f"c{k}" for k in range(10)]
    table = found.table(class_names=names, ids=arrays["train_index"])
    assert [r["row"] for r in table] == found.indices.tolist() and table[0]["rank"] == 1
    first = table[0]
    assert first["id"] == arrays["train_index"][first["row"]] and first["flagged"]
    assert first["given_class"] == names[labels[first["row"]]] and first["suggested_class"] == names[
        probs[first["row"]].argmax()]
    everything = found.table(flagged_only=False)
    assert len(everything) == 200 and sorted(r["row"] for r in everything) == list(range(200))
    assert not any(r["flagged"] for r in everything[len(found):])
    assert [r["score"] for r in everything[len(found):]] == sorted((r["score"] for r in everything[len(found):]),
                                                                   reverse=True)


@pytest.mark.parametrize("labels, probs, message", [
    ([0, 1], [[2.0, -1.0], [0.5, 3.0]], "not class probabilities"),  # logits
    ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], "one class per example"),
    ([0, 2], [[0.5, 0.5], [0.5, 0.5]], "must lie in 0..1"),
    ([0.0, 1.0], [[0.5, 0.5], [0.5, 0.5]], "integer class ids"),
    ([0], [[1.0]], "C >= 2"),
])
def test_library_function_refuses_what_is_not_labels_and_probabilities(labels, probs, message):
    from tfq_noise.label_errors import find_label_errors

    with pytest.raises(ValueError, match=message):
        find_label_errors(np.asarray(labels), np.asarray(probs))
    with pytest.raises(ValueError, match="unknown filter_by"):
        find_label_errors(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), filter_by="nope")


# ----------------------------------------------------------------------------- --dataset=folder runs

COLOURS = {"blue": (20, 40, 230), "green": (30, 200, 40), "red": (220, 30, 30)}
PLANTED = {"green/planted_red0.png": "red", "blue/planted_red1.png": "red", "red/planted_green2.png": "green"}


def folder_run(tmp_path: Path, per_class: int = 14, noise_type: str = "original", noise_rate: float = 0.0):
    """A folder of solid-colour PNGs (one class per colour) with three images planted in the wrong folder, and a
    run over it whose model knows the colours: its probabilities favour each image's true colour."""
    import tfq_noise  # noqa: F401
    import tensorflow as tf

    from tfq_noise.config import RunConfig
    from tfq_noise.data import DataPaths, prepare

    root = tmp_path / "images"
    rng = np.random.default_rng(0)

    def png(path: Path, colour: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.array(COLOURS[colour]) + rng.integers(-15, 16, (8, 8, 3)), 0, 255).astype(np.uint8)
        path.write_bytes(tf.io.encode_png(pixels).numpy())

    for colour in COLOURS:
        for i in range(per_class):
            png(root / colour / f"{colour}{i:02d}.png", colour)
    for name, colour in PLANTED.items():
        png(root / name, colour)
    config = RunConfig(experiment="f", dataset="folder", noise_type=noise_type, noise_rate=noise_rate,
                       dataset_kwargs={"image_size": 8})
    data = prepare(config, DataPaths(folder_path=str(root)))
    names = data.info["classes"]
    centres = np.array([COLOURS[c] for c in names], np.float32)
    true = np.argmin(((data.train_images.reshape(len(data.train_images), -1, 3).mean(1)[:, None] - centres) ** 2)
                     .sum(-1), axis=1)
    probs = np.full((len(true), len(names)), 0.05)
    probs[np.arange(len(true)), true] = 0.9
    run = tmp_path / "results" / "f" / config.run_name
    write_run(run, {"train_probs": probs.astype(np.float16), "train_labels": data.train_labels,
                    "train_clean_labels": data.train_clean_labels, "train_corrupted": data.train_corrupted,
                    "train_index": data.train_index}, config.to_dict())
    results.write_json(run / "provenance.json", {"data": data.info})
    return run, root, data


@pytest.mark.filterwarnings("ignore:May not flag all label issues")
def test_folder_run_names_files_and_classes_and_measures_nothing_without_truth(tmp_path, capsys, monkeypatch):
    run, root, data = folder_run(tmp_path)
    shown = []
    real = fle.image_grid
    monkeypatch.setattr(fle, "image_grid", lambda images, tiles, path: shown.append((images, tiles)) or
                        real(images, tiles, path))
    out = run_ok([f"--run_dir={run}", "--top=6"], capsys)
    rows = results.read_csv(run / fle.CSV_NAME)
    planted = {str(root / name) for name in PLANTED}
    in_train = {str(p) for p in planted if Path(p).name in {Path(r["path"]).name for r in rows}}
    assert in_train == planted and {r["path"] for r in rows[:3]} == planted  # the planted images rank 1-3
    assert len(rows) == len(data.train_labels)
    for row in rows[:len(in_train)]:
        assert row["given_class"] == Path(row["path"]).parent.name  # the folder it sits in
        assert row["predicted_class"] == PLANTED[f"{Path(row['path']).parent.name}/{Path(row['path']).name}"]
        assert row["flagged_cleanlab"] == 1
    for row in rows:  # every path is the image of that example, every class a folder name
        j = int(np.flatnonzero(data.train_index == row["index"])[0])
        assert row["given_class"] == data.info["classes"][data.train_labels[j]] == Path(row["path"]).parent.name
        assert "clean_label" not in row and "corrupted" not in row
    summary = results.read_json(run / fle.JSON_NAME)
    assert not summary["truth_known"] and summary["scorers"]["cleanlab"].keys() >= {"flagged"}
    assert "precision" not in summary["scorers"]["cleanlab"] and "precision" not in out
    assert "no ground truth is known" in out and "truly mislabeled" not in out
    assert Path(rows[0]["path"]).name in out  # the top suspects are printed by file
    assert summary["top"][0]["path"] == rows[0]["path"]
    # The grid is drawn from the folder's own files, at the run's size.
    (images, tiles), = shown
    assert [t["path"] for t in tiles] == [r["path"] for r in rows[:6]] and images.shape == (6, 8, 8, 3)
    from tfq_noise.data import folder

    np.testing.assert_array_equal(images[0], folder.decode_image(rows[0]["path"], 8, 3))
    assert (run / fle.PNG_NAME).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.filterwarnings("ignore:May not flag all label issues")
def test_folder_run_moved_or_changed_folder(tmp_path, capsys):
    run, root, _ = folder_run(tmp_path)
    moved = tmp_path / "moved"
    root.rename(moved)
    assert fle.main([f"--run_dir={run}", "--images=false"]) == 2
    err = capsys.readouterr().err
    assert "--folder_path" in err and str(root) in err and err.count("\n") == 1 and outputs_in(run) == []
    run_ok([f"--run_dir={run}", "--images=false", f"--folder_path={moved}"], capsys)
    assert all(r["path"].startswith(str(moved)) for r in results.read_csv(run / fle.CSV_NAME))
    for name in (fle.CSV_NAME, fle.JSON_NAME):
        (run / name).unlink()
    for extra in range(3):  # new images: the listing no longer matches the run's
        (moved / "blue" / f"aaa{extra}.png").write_bytes((moved / "blue" / "blue00.png").read_bytes())
    assert fle.main([f"--run_dir={run}", "--images=false", f"--folder_path={moved}"]) == 2
    assert "has changed since the run" in capsys.readouterr().err and outputs_in(run) == []


@pytest.mark.filterwarnings("ignore:May not flag all label issues")
def test_folder_run_with_synthetic_noise_is_measured_against_the_flips_only(tmp_path, capsys):
    run, _, data = folder_run(tmp_path, noise_type="symmetric", noise_rate=0.3)
    out = run_ok([f"--run_dir={run}", "--images=false"], capsys)
    summary = results.read_json(run / fle.JSON_NAME)
    assert summary["truth_known"] and summary["truth"].startswith("synthetic flips only")
    assert summary["corrupted"] == int(data.train_corrupted.sum()) > 0
    assert "synthetic flips only" in out and "precision" in out


# ----------------------------------------------------------------------------- the committed CIFAR-10N result

COMMITTED = REPO_ROOT / "results" / "label_errors_cifar10n"


def test_committed_cifar10n_flags_match_the_clean_labels(cifar10n_path):
    """results/label_errors_cifar10n: precision and recall recomputed from its CSV and CIFAR-10N's clean labels
    (read through the numpy-only unpickler) are what its JSON says."""
    import csv
    import gzip

    from tfq_noise.data import cifar10, cifar10n

    summary = results.read_json(COMMITTED / fle.JSON_NAME)
    assert sorted(p.name for p in COMMITTED.iterdir()) == sorted(["README.md", *summary["outputs"]])
    csv_path = COMMITTED / (fle.CSV_NAME + ".gz")
    assert csv_path.stat().st_size < 300_000
    with gzip.open(csv_path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    (run,) = summary["runs"]
    assert run["noise_type"] == "worst" and run["method"] == "quantization" and run["seed"] == 0
    arrays = results.read_npz(REPO_ROOT / run["run_dir"] / results.PREDICTIONS)
    human = cifar10n.load_human_labels(str(cifar10n_path))
    clean, worst = human[cifar10n.CLEAN_KEY], cifar10n.human_noisy_labels(human, "worst")
    index = arrays["train_index"]
    np.testing.assert_array_equal(arrays["train_labels"], worst[index])  # the run trained on the worst labels
    wrong = worst[index] != clean[index]
    assert summary["corrupted"] == int(wrong.sum()) and summary["examples"] == len(index)
    flagged_index = np.array([int(r["index"]) for r in rows])
    assert set(flagged_index.tolist()) <= set(index.tolist()) and len(set(flagged_index.tolist())) == len(rows)
    names = list(cifar10.CLASS_NAMES)
    for row in rows[:500]:  # the CSV's labels are those of the dataset
        i = int(row["index"])
        assert row["given_class"] == names[worst[i]] and row["clean_class"] == names[clean[i]]
    for name in ("cleanlab", "disagreement"):
        mine = flagged_index[[r[f"flagged_{name}"] == "1" for r in rows]]
        hits = int(np.sum(worst[mine] != clean[mine]))
        entry = summary["scorers"][name]
        assert entry["flagged"] == len(mine) > 1000 and entry["true_positives"] == hits
        assert entry["precision"] == pytest.approx(hits / len(mine), abs=1e-12)
        assert entry["recall"] == pytest.approx(hits / int(wrong.sum()), abs=1e-12)
    cleanlab_rows = [r for r in rows if r["flagged_cleanlab"] == "1"]
    assert rows[:len(cleanlab_rows)] == cleanlab_rows  # cleanlab's flags first, by score
    scores = [float(r["score"]) for r in cleanlab_rows]
    assert scores == sorted(scores, reverse=True)
    text = (COMMITTED / "README.md").read_text()
    assert f"{summary['scorers']['cleanlab']['precision']:.3f}" in text and "--rows=flagged --gzip --top=12" in text
