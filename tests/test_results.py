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


def test_history_round_trip_keeps_numbers_and_gaps(tmp_path):
    rows = [{"epoch": 1, "loss": 2.5, "val_f1": None}, {"epoch": 2, "loss": 1e-05, "note": "x"}]
    results.write_csv(tmp_path / "history.csv", rows)
    back = results.read_csv(tmp_path / "history.csv")
    assert back == [{"epoch": 1, "loss": 2.5, "val_f1": None, "note": None},
                    {"epoch": 2, "loss": 1e-05, "val_f1": None, "note": "x"}]


def test_run_state_and_finished_runs(tmp_path):
    assert results.run_state(tmp_path / "a") == "new"
    results.write_csv(tmp_path / "a" / results.HISTORY, [{"epoch": 1}])
    assert results.run_state(tmp_path / "a") == "partial"
    results.write_json(tmp_path / "b" / results.FINAL, {"method": "baseline"})
    assert results.run_state(tmp_path / "b") == "done"
    assert results.load_finals(tmp_path) == [{"method": "baseline", "run_dir": str(tmp_path / "b")}]
