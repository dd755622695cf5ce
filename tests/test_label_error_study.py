"""The label-error study: every finished run of an experiment scored against its known wrong labels."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import label_error_study as study
from experiments import docs
from tests.test_find_label_errors import CONFIG, synthetic, write_run
from tfq_noise import results


def _final(method, seed, noise_rate=0.3):
    hparams = {"weight_bits": 4, "activation_bits": 4} if method == "quantization" else {}
    return {"method": method, "hparams": hparams, "noise_type": "symmetric", "noise_rate": noise_rate, "seed": seed}


def _experiment(tmp_path):
    """Two seeds of a 'baseline' that memorized every wrong label and of a 'quantization' that caught them."""
    experiment = tmp_path / "exp"
    for seed in (0, 1):
        arrays, _ = synthetic(seed=seed)
        memorized = dict(arrays)
        probs = np.full_like(arrays["train_probs"], 0.02, dtype=np.float64)
        probs[np.arange(len(probs)), arrays["train_labels"]] = 0.82  # fitted to every given label
        memorized["train_probs"] = probs.astype(np.float16)
        for method, data in (("baseline", memorized), ("quantization", arrays)):
            run = write_run(experiment / f"symmetric-0.30__{method}__seed{seed}", data, dict(CONFIG, seed=seed,
                                                                                             method=method))
            results.write_json(run / results.FINAL, _final(method, seed))
    unfinished = write_run(experiment / "symmetric-0.30__dropout__seed0", synthetic()[0])  # no final.json
    assert unfinished.is_dir()
    return experiment


def test_runs_are_scored_against_their_wrong_labels(tmp_path):
    rows = study.study(_experiment(tmp_path), print_fn=lambda *a: None)
    assert sorted((r["method"], r["seed"]) for r in rows) == [("baseline", 0), ("baseline", 1),
                                                                ("quantization", 0), ("quantization", 1)]
    for row in rows:
        cleanlab = row["scorers"]["cleanlab"]
        assert row["trainings"] == 1 and row["predictions"] == "single run, in-sample"
        assert row["corrupted_rate"] == pytest.approx(0.3)
        if row["method"] == "baseline":  # memorized: nothing flagged, F1 0 (not undefined), ranking uninformative
            assert cleanlab["flagged"] == 0 and cleanlab["f1"] == 0.0
            assert row["scorers"]["disagreement"]["f1"] == 0.0
        else:  # 54 of the 60 wrong labels caught, 8 clean examples confused
            assert row["scorers"]["disagreement"]["true_positives"] == 54
            assert row["scorers"]["disagreement"]["flagged"] == 62
            assert cleanlab["average_precision"] > 0.85


@pytest.mark.filterwarnings("ignore:May not flag all label issues")  # 50 examples for 10 classes
def test_a_filtered_run_is_scored_by_its_folds_only(tmp_path):
    """The cleanlab method retrains on the examples it kept: its own predictions cover that subset (fewer wrong
    labels), so only its K folds' out-of-sample predictions, over every training example, make a row."""
    from tests.test_find_label_errors import _split

    arrays, _ = synthetic()
    run = tmp_path / "exp" / "symmetric-0.30__cleanlab__seed0"
    kept = np.arange(100)  # 200 examples, 30% of them with wrong labels
    write_run(run, {k: (v[kept] if k.startswith("train_") else v) for k, v in arrays.items()})
    results.write_json(run / results.FINAL, dict(_final("cleanlab", 0), data_filter={"cleanlab": {"kept": 100}}))
    parts = np.array_split(np.arange(200), 4)
    for k in range(4):
        (train,), (val,) = (_split(arrays, [np.concatenate([p for i, p in enumerate(parts) if i != k])]),
                            _split(arrays, [parts[k]], prefix="val"))
        write_run(run / "folds" / f"fold{k}", {**train, **val})
    rows = study.study(tmp_path / "exp", print_fn=lambda *a: None)
    assert [(r["predictions"], r["trainings"], r["examples"]) for r in rows] == [("4-fold, out-of-sample", 5, 200)]
    assert rows[0]["corrupted_rate"] == pytest.approx(0.3)


def test_the_table_and_the_readme_block_come_from_study_json(tmp_path):
    out = tmp_path / "study"
    study.write(_experiment(tmp_path), out, print_fn=lambda *a: None)
    block = docs.generate_block("labelerrors", out, "results/label_errors/x")
    assert "--output_dir=results/label_errors/x --readme` from" in block
    assert "--readme=docs/results.md` from" in docs.generate_block("labelerrors", out, "results/label_errors/x",
                                                                    "docs/results.md")
    lines = [line for line in block.splitlines() if line.startswith("| s = 30%")]
    assert [line.split(" | ")[1] for line in lines] == ["baseline", "quantization W4/A4"]
    assert "(n=2)" in lines[1] and lines[0].split(" | ")[6].endswith("0.000 ± 0.000 (n=2)")
    assert (out / study.STUDY_MD).read_text().endswith(study.readme_block(out))
    data = results.read_json(out / study.STUDY_JSON)
    data["rows"][-1]["scorers"]["cleanlab"]["f1"] = 0.5  # an edited result changes the block
    results.write_json(out / study.STUDY_JSON, data)
    assert docs.generate_block("labelerrors", out, "results/label_errors/x") != block


def test_only_the_methods_asked_and_a_clear_error_without_runs(tmp_path, capsys):
    experiment = _experiment(tmp_path)
    assert {r["method"] for r in study.study(experiment, {"quantization"}, print_fn=lambda *a: None)} == {"quantization"}
    assert study.main([str(experiment), f"--output_dir={tmp_path / 'o'}", "--methods=mixup"]) == 2
    assert "no finished run" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert study.main([str(tmp_path / "absent"), f"--output_dir={tmp_path / 'o'}"]) == 2


def test_the_committed_study_matches_its_runs():
    """results/label_errors/recipe_n20k_e20_none/study.json is what the committed predictions give now."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    committed = results.read_json(root / "results/label_errors/recipe_n20k_e20_none/study.json")
    experiment = root / committed["experiment"]
    row = next(r for r in committed["rows"] if r["run"] == "symmetric-0.40__quantization__seed0")
    again = study.score([experiment / row["run"]], "train")
    for scorer in study.SCORERS:
        for key in ("flagged", "true_positives", "average_precision", "f1"):
            assert again["scorers"][scorer][key] == pytest.approx(row["scorers"][scorer][key], rel=1e-9)
    finished = {p.parent.name for p in experiment.glob(f"*/{results.FINAL}")
                if (p.parent / results.PREDICTIONS).is_file() and "0.00" not in p.parent.name}
    assert {r["run"] for r in committed["rows"]} == finished, "run label_error_study again after adding runs"


def test_a_run_that_flags_nothing_has_no_precision_not_nan():
    row = {"noise_type": "symmetric", "noise_rate": 0.4, "variant": "baseline", "predictions": "single run, in-sample",
           "trainings": 1, "corrupted_rate": 0.36,
           "scorers": {"cleanlab": {"flagged": 0, "precision": None, "recall": 0.0, "f1": 0.0,
                                    "average_precision": 0.58},
                       "disagreement": {"f1": 0.035}}}
    [line] = [l for l in study.table([row]) if l.startswith("| s = 40%")]
    assert "| 0, —, 0.000, 0.000 |" in line and "nan" not in line
