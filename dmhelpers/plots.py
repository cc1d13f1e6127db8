"""The notebooks' figures, one function each, so a notebook cell that draws one is one line.

Each function draws one figure with one message, sized for a notebook column (about 9 inches wide at most), shows
it, and saves it as ``<save_to>/<name>.png`` when ``save_to`` is a folder (``FIGURE_DIR`` in the notebooks).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

PLAIN, DEEP = {"color": "tab:blue", "linestyle": "--", "marker": "o"}, {"color": "tab:orange", "marker": "o"}


def _finish(fig: plt.Figure, save_to: str | Path | None, name: str) -> None:
    fig.tight_layout()
    if save_to:
        Path(save_to).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(save_to) / f"{name}.png", dpi=100)
    plt.show()


def chunk_lengths(characters: Sequence[int], word_pieces: Sequence[int] | None = None, max_pieces: int | None = None,
                  save_to: str | Path | None = None) -> None:
    """How long the chunks are: in characters, and in the word pieces the embedder reads (with its limit)."""
    panels = 2 if word_pieces is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.2), squeeze=False)
    axes[0, 0].hist(characters, bins=40)
    axes[0, 0].set(title="Chunk length in characters", xlabel="characters", ylabel="chunks")
    if word_pieces is not None:
        ax = axes[0, 1]
        ax.hist(word_pieces, bins=40)
        if max_pieces:
            ax.axvline(max_pieces, color="red", linestyle="--", label=f"the model reads {max_pieces}")
            ax.legend()
        ax.set(title="Chunk length in word pieces", xlabel="word pieces", ylabel="chunks")
    _finish(fig, save_to, "01_chunk_lengths")


def training_curve(job: dict[str, Any], save_to: str | Path | None = None) -> None:
    """Recall@10 on held-out training questions: plain search, the memory (no epochs: a flat line) and the
    layer epoch by epoch, for seen- and new-chunk questions.

    The layer's curve is solid when the job kept it and thin when it did not; the dashed vertical line marks the
    epochs chosen. A layer setting that did not qualify but would have gained more is drawn dash-dotted, with why.
    """
    history = job["history"]
    epochs = [h["epoch"] for h in history]
    memory = job.get("insertion") or {}
    layer_on = bool(job.get("alpha") or job.get("beta") or job.get("alpha_out"))
    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    for kind, colour in (("seen", "tab:orange"), ("new", "tab:green")):
        key = f"val_{kind}_recall@10"
        if key in history[0]:
            ax.axhline(job["validation"]["base"][kind]["recall@10"], color=colour, linestyle=":", linewidth=2,
                       label=f"{kind}-chunk questions, plain search")
            if layer_on:  # a layer not kept ranks as plain search: its curve would hide the plain line
                ax.plot(epochs, [h[key] for h in history], marker="o", color=colour, markersize=4,
                        label=f"{kind}-chunk, layer")
        if job.get("slots") and kind in memory.get("model", {}):
            value = memory["model"][kind]["recall@10"]
            same = abs(value - memory["base"][kind]["recall@10"]) < 5e-4
            ax.axhline(value, color=colour, linestyle=(0, (6, 6)) if same else "--", linewidth=1.5,
                       label=f"{kind}-chunk questions, memory" + (" (same as plain search)" if same else ""))
    rejected = job.get("validation", {}).get("rejected")
    for kind, colour in (("seen", "tab:orange"), ("new", "tab:green")):
        key = f"rejected_{kind}_recall@10"
        if rejected and key in history[0]:
            ax.plot(epochs, [h[key] for h in history], color=colour, linewidth=1, alpha=0.6, linestyle="-.",
                    label=f"{kind}-chunk, best rejected layer")
    if rejected:
        ax.text(0.01, 0.02, f"layer setting rejected because {rejected['why']}", transform=ax.transAxes, fontsize=7,
                color="grey", wrap=True)
    chosen = job.get("epochs_chosen", 0)
    if layer_on:
        ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen: {chosen} epoch{'s' * (chosen != 1)}")
    kept = (" (plain search kept)" if job.get("kept_identity") else "" if layer_on else
            " (the layer was not kept)")
    ax.set(title=f"Recall@10 on held-out training questions{kept}", xlabel="epoch", ylabel="recall@10",
           ylim=(0, 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: never over a curve
    _finish(fig, save_to, "02_training_curve")


def recall_at_k(report: dict[str, Any], n_questions: int, save_to: str | Path | None = None) -> None:
    """Recall@k of plain search and of deep memory on the test questions (the tutorial's table as a figure)."""
    ks = [int(key.split("@")[1]) for key in report["without model"] if key.startswith("recall@")]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(ks, [report["without model"][f"recall@{k}"] for k in ks], label="plain search", **PLAIN)
    if "with model" in report:
        ax.plot(ks, [report["with model"][f"recall@{k}"] for k in ks], label="deep memory", **DEEP)
    ax.set(xscale="log", ylim=(0, 1), xlabel="k", ylabel="recall@k", title=f"Recall@k on {n_questions} test questions")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.legend()
    _finish(fig, save_to, "03_recall_at_k")


def rank_changes(plain_rank: Sequence[int], deep_rank: Sequence[int], depth: int = 100,
                 save_to: str | Path | None = None) -> None:
    """How far deep memory moved each test question's relevant chunk (plain rank minus deep-memory rank)."""
    change = np.asarray(plain_rank) - np.asarray(deep_rank)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(np.clip(change, -30, 30), bins=np.arange(-30.5, 31.5, 1))
    ax.set(xlabel=f"ranks moved up (plain rank - deep memory rank; {depth + 1} = not in the top {depth}; clipped at 30)",
           ylabel="test questions", title=f"{(change > 0).sum()} moved up, {(change == 0).sum()} unchanged, "
                                          f"{(change < 0).sum()} moved down")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(fig, save_to, "03_rank_change")


def cost_curves(plain: dict[str, list[float]], deep: dict[str, list[float]], saved: dict[str, Any], baseline_k: int,
                save_to: str | Path | None = None) -> None:
    """Recall against k and against prompt tokens: the k deep memory needs for plain search's recall at
    ``baseline_k``, and the tokens that k costs."""
    fig, (ax_k, ax_t) = plt.subplots(1, 2, figsize=(9, 3.4))
    for curve, label, style in ((plain, "plain search", PLAIN), (deep, "deep memory", DEEP)):
        ax_k.plot(curve["k"], curve["recall"], label=label, markersize=3, **style)
        ax_t.plot(curve["prompt_tokens"], curve["recall"], label=label, markersize=3, **style)
    for ax in (ax_k, ax_t):
        ax.axhline(saved["target_recall"], color="grey", linestyle=":", label=f"plain search at k={baseline_k}")
        ax.set(ylim=(0, 1), ylabel="recall@k")
        ax.legend(fontsize=8, loc="lower right")
    ax_k.set(xlabel="k (chunks in the prompt)", title="Recall vs chunks in the prompt")
    ax_k.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_t.set(xlabel="prompt tokens per question", title="Recall vs prompt tokens")
    _finish(fig, save_to, "05_cost")
