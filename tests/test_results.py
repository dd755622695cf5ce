"""Result files: atomic writes (never half a file), history round trip, finished runs."""

from __future__ import annotations

import pytest

from tfq_noise import results


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "final.json"
    results.write_json(path, {"test_accuracy": 0.5})

    def write_half_then_fail(tmp):
        with open(tmp, "w") as f:
            f.write('{"test_accu')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        results.atomic_write(path, write_half_then_fail)
    assert results.read_json(path) == {"test_accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["final.json"]


def test_figure_is_saved_in_the_format_of_its_suffix(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    results.atomic_save_figure(fig, tmp_path / "plots" / "curve.png", dpi=50)
    plt.close(fig)
    assert (tmp_path / "plots" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["curve.png"]


def _figure(path, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.plot([0, 1], [1, 0])
    results.atomic_save_figure(fig, path, dpi=30, **kwargs)
    plt.close(fig)


def test_a_figure_records_its_inputs_and_goes_stale_when_a_run_changes(tmp_path):
    experiment = tmp_path / "results" / "exp"
    run = experiment / "symmetric-0.40__baseline__seed0"
    results.write_json(run / results.FINAL, {"test_accuracy": 0.5})
    results.write_csv(run / results.HISTORY, [{"epoch": 1, "test_accuracy": 0.5}])
    (run / results.CHECKPOINTS).mkdir()
    (run / results.CHECKPOINTS / results.FINAL).write_text("{}")  # never a figure's input
    figure = experiment / "accuracy.png"
    _figure(figure, inputs=[experiment], command="python -m experiments.report results/exp")
    source = results.figure_source(figure)
    assert source["inputs"] == ["."] and source["command"] == "python -m experiments.report results/exp"
    assert results.stale_figure(figure) is None
    (run / results.CHECKPOINTS / results.FINAL).write_text('{"a": 1}')
    assert results.stale_figure(figure) is None

    results.write_json(run / results.FINAL, {"test_accuracy": 0.6})  # a run rewritten
    assert "redraw it with python -m experiments.report results/exp" in results.stale_figure(figure)
    _figure(figure, inputs=[experiment], command="c")
    assert results.stale_figure(figure) is None
    other = experiment / "symmetric-0.40__quantization__seed0"  # a run added
    results.write_json(other / results.FINAL, {"test_accuracy": 0.7})
    assert "older than the runs" in results.stale_figure(figure)
    _figure(figure, inputs=[experiment], command="c")
    (other / results.FINAL).rename(other / "renamed.json")  # a run removed
    assert "older than the runs" in results.stale_figure(figure)


def test_a_figure_drawn_from_other_folders_finds_them_relative_to_itself(tmp_path):
    for name in ("k1", "k3"):
        results.write_json(tmp_path / name / "run" / results.FINAL, {"average_f1": 0.5})
    figure = tmp_path / "out" / "side.png"
    _figure(figure, inputs=[tmp_path / "k1", tmp_path / "k3"])
    assert results.figure_source(figure)["inputs"] == ["../k1", "../k3"]
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)  # the repository moved: still fresh
    assert results.stale_figure(moved / "out" / "side.png") is None
    import shutil
    shutil.rmtree(moved / "k3")
    assert "no longer exists" in results.stale_figure(moved / "out" / "side.png")


def test_a_figure_without_inputs_is_reported_and_only_a_png_records_them(tmp_path):
    _figure(tmp_path / "plain.png")
    assert results.figure_source(tmp_path / "plain.png") is None
    assert "records no inputs" in results.stale_figure(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="only a PNG"):
        _figure(tmp_path / "plain.pdf", inputs=[tmp_path])
    with pytest.raises(FileNotFoundError, match="no such results folder"):
        _figure(tmp_path / "x.png", inputs=[tmp_path / "missing"])
    assert not (tmp_path / "x.png").exists()


def test_history_round_trip_keeps_numbers_and_gaps(tmp_path):
    rows = [{"epoch": 1, "loss": 2.5, "val_f1": None}, {"epoch": 2, "loss": 1e-05, "note": "x"}]
    results.write_csv(tmp_path / "history.csv", rows)
    back = results.read_csv(tmp_path / "history.csv")
    assert back == [{"epoch": 1, "loss": 2.5, "val_f1": None, "note": None},
                    {"epoch": 2, "loss": 1e-05, "val_f1": None, "note": "x"}]


FINAL = {"dataset": "cifar10", "method": "baseline", "noise_type": "symmetric", "noise_rate": 0.4, "seed": 0,
         "hparams": {}, "epochs": 1, "test_accuracy": 0.5, "test_accuracy_last5": None, "best_test_accuracy": 0.5,
         "wall_seconds": 1.0}


def test_run_state_and_finished_runs(tmp_path):
    assert results.run_state(tmp_path / "a") == "new"
    results.write_csv(tmp_path / "a" / results.HISTORY, [{"epoch": 0}])
    assert results.run_state(tmp_path / "a") == "partial"
    results.write_csv(tmp_path / "a" / results.HISTORY, [{"epoch": 1}])  # epoch 0 lost: not what a run writes
    assert results.run_state(tmp_path / "a") == "damaged"
    # A method whose first trainings (confident learning's folds) finished but whose own has not begun: partial.
    results.write_json(tmp_path / "c" / results.FOLDS / "fold0" / results.FINAL, FINAL)
    assert results.run_state(tmp_path / "c") == "partial"
    results.write_json(tmp_path / "b" / results.FINAL, FINAL)
    assert results.run_state(tmp_path / "b") == "done"
    assert results.load_finals(tmp_path) == [{**FINAL, "run_dir": str(tmp_path / "b")}]
    results.write_json(tmp_path / "b" / results.FINAL, {"method": "baseline"})  # valid JSON, not a summary
    assert results.run_state(tmp_path / "b") == "damaged"
    with pytest.raises(results.DamagedFile, match="dataset missing"):
        results.load_finals(tmp_path)
