"""The recipe search's rule (sound and over-fitting, then the most accurate), its cost columns, and which
recipe carries the method grid."""

from __future__ import annotations

import pytest

from experiments import recipes
from tfq_noise import results


def _run(run_dir, *, method="baseline", rate, seed=0, accuracy, gap=0.0, memorized=0.9, peak=None,
         minutes=30.0, train_examples=20000, epochs=20, augment="none"):
    results.write_csv(run_dir / results.HISTORY, [{"epoch": 0, "test_accuracy": accuracy}])
    results.write_json(run_dir / results.CONFIG, {"epochs": epochs, "augment": augment, "lr_schedule": "cosine",
                                                  "precision": "float32"})
    results.write_json(run_dir / results.PROVENANCE, {"data": {"train_examples": train_examples}})
    results.write_json(run_dir / results.FINAL, {
        "dataset": "cifar10", "method": method, "noise_type": "symmetric", "noise_rate": rate, "seed": seed,
        "hparams": {}, "epochs": epochs, "test_accuracy": accuracy, "test_accuracy_last5": accuracy, "last_epoch_test_accuracy": accuracy, "best_test_accuracy": peak or accuracy,
        "last_mode_gap": gap, "last_memorized": memorized, "last_trainmode_memorized": memorized + 0.01,
        "wall_seconds": 60 * minutes})


def _recipe(search, name, *, clean, gap, memorized, peak, final, minutes=(30.0, 30.0), **kw):
    _run(search / name / "s0", rate=0.0, accuracy=clean, gap=gap, minutes=minutes[0], **kw)
    _run(search / name / "s40", rate=0.4, accuracy=final, memorized=memorized, peak=peak, minutes=minutes[1], **kw)


def test_the_rule_picks_the_most_accurate_recipe_that_is_sound_and_over_fits(tmp_path):
    search = tmp_path / "search"
    _recipe(search, "a_small", clean=0.65, gap=0.0, memorized=0.96, peak=0.47, final=0.38)
    # More accurate and sound, but its baseline does not over-fit (memorizes 4%): nothing to fight.
    _recipe(search, "b_augmented", clean=0.80, gap=0.01, memorized=0.04, peak=0.75, final=0.74,
            train_examples=45000)
    # Over-fits and more accurate, but BatchNorm has not settled (gap 10 points).
    _recipe(search, "c_unsettled", clean=0.75, gap=0.10, memorized=0.80, peak=0.55, final=0.45)
    # Memorizes, but its accuracy barely drops from the peak (4.9 < 5 points): does not over-fit.
    _recipe(search, "d_flat", clean=0.78, gap=0.0, memorized=0.7, peak=0.60, final=0.551)
    rows = {r["recipe"]: r for r in recipes.search_rows(search)}
    assert [rows[n]["sound"] for n in sorted(rows)] == [True, True, False, True]
    assert [rows[n]["overfits"] for n in sorted(rows)] == [True, False, True, False]
    chosen, why = recipes.choose(list(rows.values()))
    assert chosen["recipe"] == "a_small" and "falls short of the 85% aim" in why
    assert rows["b_augmented"]["images_seen"] == 900_000 and rows["a_small"]["drop"] == pytest.approx(0.09)

    # A better recipe that is both wins, and the table bolds it.
    _recipe(search, "e_better", clean=0.86, gap=0.02, memorized=0.6, peak=0.70, final=0.60)
    chosen, why = recipes.choose(recipes.search_rows(search))
    assert chosen["recipe"] == "e_better" and "meets the 85% aim" in why
    text = recipes.markdown(recipes.search_rows(search))
    assert "| **e_better** | 20000 | 20 | none | 0.40 | 86.0 | 2.0 | 60 / 61 | 70.0 → 60.0 (10.0) |" in text


def test_fallback_when_no_recipe_is_sound_and_when_none_over_fits(tmp_path):
    search = tmp_path / "search"
    _recipe(search, "a", clean=0.70, gap=0.10, memorized=0.9, peak=0.5, final=0.4)
    _recipe(search, "b", clean=0.72, gap=0.12, memorized=0.9, peak=0.5, final=0.4)
    chosen, why = recipes.choose(recipes.search_rows(search))
    assert chosen["recipe"] == "b" and "no recipe is both sound and over-fitting" in why
    other = tmp_path / "other"
    _recipe(other, "a", clean=0.80, gap=0.0, memorized=0.1, peak=0.7, final=0.7)
    assert recipes.choose(recipes.search_rows(other)) == (None, "No finished recipe over-fits at s = 40%: none can "
                                                                 "be chosen yet.")
    half = tmp_path / "half"
    _run(half / "a" / "s40", rate=0.4, accuracy=0.4, peak=0.5)
    chosen, why = recipes.choose(recipes.search_rows(half))
    assert chosen is None and "both its s = 0 and s = 40% runs" in why


def test_the_table_says_which_recipe_carries_the_grid_and_how_its_run_times_vary(tmp_path):
    search = tmp_path / "search"
    _recipe(search, "a_grid", clean=0.65, gap=0.0, memorized=0.96, peak=0.47, final=0.38, minutes=(135, 15))
    for seed in (0, 1):
        _run(search / "a_grid" / f"q{seed}", method="quantization", rate=0.4, seed=seed, accuracy=0.6)
    _recipe(search, "b_big", clean=0.78, gap=0.0, memorized=0.9, peak=0.55, final=0.45, train_examples=45000)
    rows = recipes.search_rows(search)
    chosen, _ = recipes.choose(rows)
    assert chosen["recipe"] == "b_big"
    text = recipes.markdown(rows)
    assert ("The method grid (4 runs of 2 methods) runs on a_grid, not on the rule's choice: its verdict speaks "
            "for a_grid.") in text
    assert "| 135, 15 | yes | yes | 4 (2) |" in text
    assert "The 2 float baseline runs of a_grid took 15 to 135 minutes each" in text
    # When the chosen recipe holds a smaller grid of its own, the note names both.
    _run(search / "b_big" / "q0", method="quantization", rate=0.4, seed=0, accuracy=0.6)
    assert ("The method grid runs on two recipes: b_big, the rule's choice (3 runs of 2 methods), and a_grid "
            "(4 runs of 2 methods); each verdict speaks for the recipe whose runs it quotes.") in recipes.markdown(
        recipes.search_rows(search))
    # When the grid sits on the chosen recipe, the note says so.
    for seed in range(3):
        _run(search / "b_big" / f"q{seed}", method="quantization", rate=0.4, seed=seed, accuracy=0.6)
    assert "The method grid (5 runs of 2 methods) runs on this recipe." in recipes.markdown(recipes.search_rows(search))


def test_a_missing_search_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no recipe search folder"):
        recipes.search_rows(tmp_path / "nowhere")
    assert recipes.main([str(tmp_path / "nowhere")]) == 2
    assert "error: no recipe search folder" in capsys.readouterr().err
    assert recipes.main([]) == 2
