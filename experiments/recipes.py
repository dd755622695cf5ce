"""The standard protocol's recipe search: which training recipe gives a sound baseline *and* over-fitting
to fight, within a CPU budget.

    python -m experiments.recipes results/recipe_search [--readme[=FILE]]

Each sub-folder of the search is one experiment (one recipe: training-set size, epochs, augmentation; the
rest from ``experiments/configs/cifar10_recipe_search.flags``) holding float-baseline runs at s = 0 and
s = 40%. Per recipe this prints and writes ``recipes.md`` and ``recipes.png``:

* at s = 0: clean test accuracy at the last epoch, and the BatchNorm gap (training-mode minus inference-mode
  accuracy on the same training images) at the last epoch;
* at s = 40%: the share of corrupted training examples predicted as their wrong label at the end
  (inference / training mode), the peak and final clean test accuracy and the drop between them;
* the cost: training images seen (images × epochs, comparable across machines) and wall minutes per run;
* how many runs (of how many methods) the folder holds, so the table shows which recipe carries the grid.

The rule: a recipe is *sound* when the s = 0 gap is ≤ 3 points (aim: accuracy ≥ 85%), and *over-fits*
when, at s = 40%, ≥ 50% of the corrupted examples carry their wrong label at the end and the final
accuracy is ≥ 5 points below the peak. The choice is the most accurate recipe (at s = 0) that is both;
if none is, the most accurate one that over-fits, and the table says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfq_noise import results  # noqa: E402

from . import blocks  # noqa: E402

MAX_GAP = 0.03
AIM_ACCURACY = 0.85
MIN_MEMORIZED = 0.5
MIN_DROP = 0.05
OVERFIT_RATE = 0.4


def _baseline(finals, rate):
    runs = [f for f in finals if f["method"] == "baseline" and abs(f["noise_rate"] - rate) < 1e-9
            and f["noise_type"] == "symmetric"]
    return min(runs, key=lambda f: f["seed"]) if runs else None


def recipe_row(experiment_dir: Path) -> dict | None:
    """The search's figures for one recipe (None if it has no finished run)."""
    finals, _ = results.main_precision(results.load_finals(experiment_dir))
    if not finals:
        return None
    config = results.read_json(Path(finals[0]["run_dir"]) / results.CONFIG)
    clean, noisy = _baseline(finals, 0.0), _baseline(finals, OVERFIT_RATE)
    provenance = results.read_json(Path(finals[0]["run_dir"]) / results.PROVENANCE).get("data", {})
    row = {"recipe": experiment_dir.name, "train_examples": provenance.get("train_examples"),
           "epochs": config["epochs"], "augment": config.get("augment"),
           "lr_schedule": config.get("lr_schedule", "constant"), "minutes": [], "seeds": sorted({f["seed"] for f in finals}),
           "runs": len(finals), "methods": len({f["method"] for f in finals})}
    row["images_seen"] = row["train_examples"] * row["epochs"] if row["train_examples"] else None
    walls = [f["wall_seconds"] / 60 for f in finals if f["method"] == "baseline" and f.get("wall_seconds")]
    row["baseline_minutes"] = (min(walls), max(walls), len(walls)) if walls else None
    if clean:
        row["clean_accuracy"] = clean["test_accuracy"]
        row["clean_gap"] = clean.get("last_mode_gap")
        row["minutes"].append(clean["wall_seconds"] / 60)
    if noisy:
        row["memorized"] = noisy.get("last_memorized")
        row["trainmode_memorized"] = noisy.get("last_trainmode_memorized")
        row["peak"] = noisy.get("best_test_accuracy")
        row["final"] = noisy.get("last_epoch_test_accuracy", noisy["test_accuracy"])
        row["drop"] = row["peak"] - row["final"]
        row["minutes"].append(noisy["wall_seconds"] / 60)
    row["sound"] = None if row.get("clean_gap") is None else row["clean_gap"] <= MAX_GAP
    row["overfits"] = (None if row.get("memorized") is None
                       else row["memorized"] >= MIN_MEMORIZED and row["drop"] >= MIN_DROP)
    return row


def search_rows(search_dir) -> list[dict]:
    search_dir = Path(search_dir)
    if not search_dir.is_dir():
        raise FileNotFoundError(f"no recipe search folder at {search_dir}")
    rows = [recipe_row(d) for d in sorted(search_dir.iterdir()) if d.is_dir()]
    return [r for r in rows if r is not None]


def choose(rows) -> tuple[dict | None, str]:
    """The recipe the rule picks, and why (or why none can be picked yet)."""
    complete = [r for r in rows if r["sound"] is not None and r["overfits"] is not None]
    both = [r for r in complete if r["sound"] and r["overfits"]]
    if both:
        best = max(both, key=lambda r: r["clean_accuracy"])
        reach = "meets" if best["clean_accuracy"] >= AIM_ACCURACY else "falls short of"
        return best, (f"{best['recipe']}: the most accurate recipe that is sound and over-fits; its clean accuracy "
                      f"{reach} the {AIM_ACCURACY:.0%} aim.")
    overfitting = [r for r in complete if r["overfits"]]
    if overfitting:
        best = max(overfitting, key=lambda r: r["clean_accuracy"])
        return best, (f"{best['recipe']}: no recipe is both sound and over-fitting; this is the most accurate one "
                      "that over-fits (its BatchNorm gap exceeds the bound).")
    if complete:
        return None, "No finished recipe over-fits at s = 40%: none can be chosen yet."
    return None, "No recipe has both its s = 0 and s = 40% runs finished yet: none can be chosen."


def grid_note(rows, chosen) -> str:
    """Which recipe carries the method grid (the folder with the most runs of methods other than the
    baseline), and whether that is the rule's choice; when the rule's choice holds a grid of its own but a
    smaller one, both are named."""
    grids = [r for r in rows if r["methods"] > 1]
    if not grids:
        return ""
    grid = max(grids, key=lambda r: (r["runs"], r["methods"]))
    size = f"{grid['runs']} runs of {grid['methods']} methods"
    if chosen is grid:
        return f"The method grid ({size}) runs on this recipe."
    if chosen is not None and chosen["methods"] > 1:
        return (f"The method grid runs on two recipes: {chosen['recipe']}, the rule's choice "
                f"({chosen['runs']} runs of {chosen['methods']} methods), and {grid['recipe']} ({size}); each "
                "verdict speaks for the recipe whose runs it quotes.")
    return (f"The method grid ({size}) runs on {grid['recipe']}, not on the rule's choice: its verdict speaks for "
            f"{grid['recipe']}.")


def _speed_note(rows) -> str:
    spread = [(r["recipe"], *r["baseline_minutes"]) for r in rows
              if r.get("baseline_minutes") and r["baseline_minutes"][2] > 1]
    if not spread:
        return ""
    recipe, low, high, n = max(spread, key=lambda s: s[2] / max(s[1], 1e-9))
    return (f" The {n} float baseline runs of {recipe} took {low:.0f} to {high:.0f} minutes each, across machines "
            "and loads: compare recipes' cost by images seen.")


def _pct(value, digits=1):
    return "—" if value is None else f"{100 * value:.{digits}f}"


def _yes(value):
    return "—" if value is None else ("yes" if value else "no")


def markdown(rows) -> str:
    chosen, why = choose(rows)
    lines = ["| recipe | train images | epochs | augment | images seen (M) | s = 0: accuracy | s = 0: BN gap | "
             "s = 40%: memorized (inference / training mode) | s = 40%: peak → final (drop) | minutes per run | "
             "sound | over-fits | runs here (methods) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        minutes = ", ".join(f"{m:.0f}" for m in r["minutes"]) or "—"
        memorized = f"{_pct(r.get('memorized'), 0)} / {_pct(r.get('trainmode_memorized'), 0)}"
        peak = (f"{_pct(r.get('peak'))} → {_pct(r.get('final'))} ({_pct(r.get('drop'))})"
                if r.get("peak") is not None else "—")
        name = f"**{r['recipe']}**" if chosen is r else r["recipe"]
        seen = "—" if r.get("images_seen") is None else f"{r['images_seen'] / 1e6:.2f}"
        lines.append(f"| {name} | {r['train_examples'] or '—'} | {r['epochs']} | {r['augment']} | {seen} | "
                     f"{_pct(r.get('clean_accuracy'))} | {_pct(r.get('clean_gap'))} | {memorized} | {peak} | "
                     f"{minutes} | {_yes(r['sound'])} | {_yes(r['overfits'])} | {r['runs']} ({r['methods']}) |")
    lines += ["", f"Float ResNet20 baseline, seed 0, Adam 1e-3 with the schedule of each run, batch 128. Accuracies in %, "
              "gaps and drops in points. Sound: BN gap ≤ 3 points at s = 0. Over-fits: at s = 40%, ≥ 50% of the "
              "corrupted examples predicted as their wrong label at the end, and ≥ 5 points from peak to final. "
              "Minutes per run (s = 0, s = 40%) are wall-clock on whatever machine each run had." + _speed_note(rows),
              "", " ".join(filter(None, [f"Choice: {why}", grid_note(rows, chosen)])), ""]
    return "\n".join(lines)


def plot(rows, path: Path) -> bool:
    points = [r for r in rows if r.get("clean_accuracy") is not None and r.get("memorized") is not None]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in points:
        ax.scatter(100 * r["memorized"], 100 * r["clean_accuracy"], s=40)
        seen = "" if r.get("images_seen") is None else f" ({r['images_seen'] / 1e6:.2f} M images seen)"
        ax.annotate(f"{r['recipe']}{seen}",
                    (100 * r["memorized"], 100 * r["clean_accuracy"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.axvline(100 * MIN_MEMORIZED, color="gray", linestyle=":", label="over-fitting bound (50% memorized)")
    ax.axhline(100 * AIM_ACCURACY, color="gray", linestyle="--", label="accuracy aim (85%)")
    ax.set_xlabel("s = 40%: corrupted examples predicted as their wrong label at the end (%)")
    ax.set_ylabel("s = 0: clean test accuracy at the last epoch (%)")
    ax.set_title("Recipe search: a sound, accurate baseline that still over-fits", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    results.atomic_save_figure(fig, path, inputs=[Path(path).parent], dpi=120, bbox_inches="tight",
                               command=f"python -m experiments.recipes {Path(path).parent.as_posix()}")
    plt.close(fig)
    return True


def readme_block(search_dir, name: str | None = None, page: str = blocks.README) -> str:
    rows = search_rows(search_dir) if Path(search_dir).is_dir() else []
    head = (f"Generated by `python -m experiments.recipes {name or Path(search_dir).as_posix()} "
            f"{blocks.readme_option(page)}` from {sum(len(r['minutes']) for r in rows)} committed runs.\n\n")
    return head + (markdown(rows) if rows else "No finished recipe run yet.\n")


def write(search_dir) -> Path:
    search_dir = Path(search_dir)
    rows = search_rows(search_dir)
    text = markdown(rows)
    figure = plot(rows, search_dir / "recipes.png")
    results.atomic_write_text(search_dir / "recipes.md",
                              "# Recipe search\n\n" + text + ("\n![recipes](recipes.png)\n" if figure else ""))
    print(text)
    return search_dir / "recipes.md"


def main(argv=None) -> int:
    return blocks.folder_command(argv, "python -m experiments.recipes", __doc__.split("\n\n")[0], "recipes", write,
                                 readme_block, "results/recipe_search")


if __name__ == "__main__":
    sys.exit(main())
