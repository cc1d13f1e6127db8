"""The notebooks' figures: every line can be told apart, and a figure with nothing to show is a sentence."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from dmhelpers import plots  # noqa: E402

KS = [1, 3, 10]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _report(plain: list[float], deep: list[float]) -> dict:
    return {"without model": {f"recall@{k}": v for k, v in zip(KS, plain)},
            "with model": {f"recall@{k}": v for k, v in zip(KS, deep)}}


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def test_recall_at_k_draws_one_labelled_line_when_deep_memory_equals_plain_search(tmp_path):
    plots.recall_at_k(_report([0.2, 0.4, 0.6], [0.2, 0.4, 0.6]), 100, save_to=tmp_path)
    assert _labels(plt.gcf().axes[0]) == ["plain search and deep memory" + plots.SAME]
    plt.close("all")
    plots.recall_at_k(_report([0.2, 0.4, 0.6], [0.3, 0.4, 0.6]), 100)
    assert _labels(plt.gcf().axes[0]) == ["plain search", "deep memory"]
    assert (tmp_path / "03_recall_at_k.png").exists()


def test_the_two_lines_differ_in_style_so_a_shared_point_shows_both():
    assert plots.PLAIN["linestyle"] != plots.DEEP.get("linestyle", "-")
    assert plots.PLAIN["markerfacecolor"] == "none" and plots.PLAIN["markersize"] > plots.DEEP["markersize"]


def test_cost_curves_say_when_the_two_are_identical():
    curve = {"k": [1, 2], "recall": [0.3, 0.5], "prompt_tokens": [200, 400]}
    saved = {"target_recall": 0.5}
    plots.cost_curves(curve, dict(curve), saved, 2)
    for ax in plt.gcf().axes:
        assert _labels(ax)[0] == "plain search and deep memory" + plots.SAME and len(ax.get_lines()) == 2
    plt.close("all")
    plots.cost_curves(curve, {**curve, "recall": [0.4, 0.6]}, saved, 2)
    assert _labels(plt.gcf().axes[0])[:2] == ["plain search", "deep memory"]


def test_a_rank_histogram_with_nothing_moved_is_a_sentence(tmp_path, capsys):
    plots.rank_changes([3, 101, 7], [3, 101, 7], save_to=tmp_path)
    assert "moved no test question's relevant chunk: all 3 keep" in capsys.readouterr().out
    assert not plt.get_fignums() and not list(tmp_path.iterdir())
    plots.rank_changes([3, 101, 7], [1, 101, 8], save_to=tmp_path)
    assert plt.gcf().axes[0].get_title() == "1 moved up, 1 moved down (1 unchanged, not drawn)"
    assert (tmp_path / "03_rank_change.png").exists()


def _job(epochs_run: int, most: int) -> dict:
    history = [{"epoch": e, "val_seen_recall@10": 0.5 + e / 100, "val_new_recall@10": 0.4} for e in range(epochs_run + 1)]
    base = {"seen": {"recall@10": 0.5}, "new": {"recall@10": 0.4}}
    return {"history": history, "validation": {"base": base}, "alpha_out": 0.3, "epochs_chosen": 1,
            "params": {"epochs": most, "patience": 5}, "slots": [[1, 0.8]],
            "insertion": {"base": base, "model": {"seen": {"recall@10": 0.6}, "new": {"recall@10": 0.4}}}}


def test_the_training_curve_says_why_it_stopped_before_its_most_epochs_and_merges_equal_lines():
    plots.training_curve(_job(6, 30))
    ax = plt.gcf().axes[0]
    assert "stopped at epoch 6 of at most 30: no better held-out result for 5 epochs" in ax.get_title()
    labels = _labels(ax)
    assert "new-chunk questions, plain search = memory" in labels and "new-chunk questions, memory" not in labels
    assert "seen-chunk questions, memory" in labels
    plt.close("all")
    plots.training_curve(_job(30, 30))
    assert "stopped" not in plt.gcf().axes[0].get_title()


def test_a_job_that_trained_no_layer_gets_a_sentence_not_a_curve(capsys):
    plots.training_curve({**_job(0, 30), "alpha_out": 0.0})
    assert "No layer was trained" in capsys.readouterr().out and not plt.get_fignums()


def test_the_figure_of_how_deep_memory_works_names_its_parts(tmp_path):
    plots.how_it_works(save_to=tmp_path)
    words = " ".join(t.get_text() for t in plt.gcf().axes[0].texts)
    for part in ("embedder", "Deep Memory", "index", "training", "(unchanged)", "notebook 01", "notebook 02"):
        assert part in words
    assert (tmp_path / "how_deep_memory_works.png").stat().st_size > 10_000


def test_plain_search_lines_that_would_coincide_are_drawn_once_with_both_values():
    job = _job(6, 30)
    job["validation"]["base"] = {"seen": {"recall@10": 0.609}, "new": {"recall@10": 0.61}}
    job["insertion"]["base"] = job["validation"]["base"]
    job["insertion"]["model"] = {"seen": {"recall@10": 0.7}, "new": {"recall@10": 0.61}}
    plots.training_curve(job)
    labels = _labels(plt.gcf().axes[0])
    assert "plain search: seen-chunk 61%, new-chunk 61% (= memory)" in labels
    assert not any(label.endswith("plain search") for label in labels)
