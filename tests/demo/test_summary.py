"""The demo's closing table: nested stage results flattened to readable rows."""

from __future__ import annotations

from medsight.demo.summary import rows


def test_rows_flatten_nested_results_and_skip_long_lists() -> None:
    results = {"segmentation": {"held_out_dice": 0.91234, "timings_s": {"train_s": 128.1}, "patch": [48, 64, 64],
                                "per_case": [1, 2, 3, 4], "scores": {"a": 1}},
               "total_seconds": 226.9}
    got = list(rows(results))
    assert got == [("segmentation", "held_out_dice", "0.9123"), ("segmentation", "timings_s / train_s", "128.1"),
                   ("segmentation", "patch", "48, 64, 64"), ("demo", "total_seconds", "226.9")]


def test_rows_cap_each_stage() -> None:
    many = {f"k{i:02d}": i for i in range(40)}
    got = list(rows({"stage": many}))
    assert len(got) == 25 and got[-1] == ("stage", "...", "(more in summary.json)")
