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

# Plain search dashed with large hollow markers, deep memory solid with small filled ones: where the two coincide,
# the filled marker sits inside the hollow one and both stay visible.
PLAIN = {"color": "tab:blue", "linestyle": "--", "marker": "o", "markersize": 8, "markerfacecolor": "none"}
DEEP = {"color": "tab:orange", "marker": "o", "markersize": 4}
SAME = " (identical at every k)"


def _same(plain: Sequence[float], deep: Sequence[float]) -> bool:
    return len(plain) == len(deep) and bool(np.allclose(plain, deep, atol=5e-4))


def _finish(fig: plt.Figure, save_to: str | Path | None, name: str) -> None:
    fig.tight_layout()
    if save_to:
        Path(save_to).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(save_to) / f"{name}.png", dpi=100, bbox_inches="tight")
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

    The layer's curve is solid when the job kept it; the dashed vertical line marks the epochs chosen. A layer
    setting that did not qualify is drawn thin and dash-dotted, with why. The title says when training stopped
    before its most epochs. A job that trained no layer (nothing to draw by epoch) gets a sentence instead.
    """
    history = job["history"]
    epochs = [h["epoch"] for h in history]
    if len(history) < 2:
        print("No layer was trained (no layer setting could act on these questions), so there is no curve: the "
              "status table above has the held-out figures.")
        return
    memory = job.get("insertion") or {}
    layer_on = bool(job.get("alpha") or job.get("beta") or job.get("alpha_out"))
    fig, ax = plt.subplots(figsize=(8, 4.6))
    colours = {"seen": "tab:orange", "new": "tab:green"}
    kinds = [kind for kind in colours if f"val_{kind}_recall@10" in history[0]]
    plain = {kind: job["validation"]["base"][kind]["recall@10"] for kind in kinds}
    same_as_plain = {}
    for kind in kinds:
        remembered = memory.get("model", {}).get(kind, {}).get("recall@10") if job.get("slots") else None
        same = remembered is not None and abs(remembered - memory["base"][kind]["recall@10"]) < 5e-4
        same_as_plain[kind] = same
        if remembered is not None and not same:
            ax.axhline(remembered, color=colours[kind], linestyle="--", linewidth=1.5,
                       label=f"{kind}-chunk questions, memory")
    if len(plain) == 2 and abs(plain["seen"] - plain["new"]) < 0.01:  # one line would hide the other: draw one
        ax.axhline(np.mean(list(plain.values())), color="0.35", linestyle=":", linewidth=2,
                   label="plain search: " + ", ".join(
                       f"{kind}-chunk {plain[kind]:.0%}" + (" (= memory)" if same_as_plain[kind] else "")
                       for kind in kinds))
    else:
        for kind in kinds:
            ax.axhline(plain[kind], color=colours[kind], linestyle=":", linewidth=2,
                       label=f"{kind}-chunk questions, plain search" + (" = memory" if same_as_plain[kind] else ""))
    if layer_on:  # a layer not kept ranks as plain search: its curve would hide the plain line
        for kind in kinds:
            ax.plot(epochs, [h[f"val_{kind}_recall@10"] for h in history], marker="o", color=colours[kind],
                    markersize=4, label=f"{kind}-chunk, layer")
    rejected = job.get("validation", {}).get("rejected")
    for kind, colour in (("seen", "tab:orange"), ("new", "tab:green")):
        key = f"rejected_{kind}_recall@10"
        if rejected and key in history[0]:
            ax.plot(epochs, [h[key] for h in history], color=colour, linewidth=1, alpha=0.6, linestyle="-.",
                    label=f"{kind}-chunk, best rejected layer")

    chosen = job.get("epochs_chosen", 0)
    if layer_on:
        ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen: {chosen} epoch{'s' * (chosen != 1)}")
    kept = (" (plain search kept)" if job.get("kept_identity") else "" if layer_on else
            " (the layer was not kept)")
    params = job.get("params", {})
    stopped = (f"\nstopped at epoch {epochs[-1]} of at most {params['epochs']}: no better held-out result for "
               f"{params['patience']} epochs" if "epochs" in params and epochs[-1] < params["epochs"] else "")
    ax.set(title=f"Recall@10 on held-out training questions{kept}{stopped}", xlabel="epoch", ylabel="recall@10",
           ylim=(0, 1))
    ax.title.set_fontsize(10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    note = f"the best rejected layer was rejected because {rejected['why']}" if rejected else None
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False,  # under the axes
              title=note, title_fontsize=8)
    _finish(fig, save_to, "02_training_curve")


def recall_at_k(report: dict[str, Any], n_questions: int, save_to: str | Path | None = None) -> None:
    """Recall@k of plain search and of deep memory on the test questions (the tutorial's table as a figure).
    When the two are identical at every k, one line says so."""
    ks = [int(key.split("@")[1]) for key in report["without model"] if key.startswith("recall@")]
    plain = [report["without model"][f"recall@{k}"] for k in ks]
    deep = [report["with model"][f"recall@{k}"] for k in ks] if "with model" in report else None
    same = deep is not None and _same(plain, deep)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(ks, plain, label="plain search" + (" and deep memory" + SAME if same else ""), **PLAIN)
    if deep is not None and not same:
        ax.plot(ks, deep, label="deep memory", **DEEP)
    ax.set(xscale="log", ylim=(0, 1), xlabel="k", ylabel="recall@k", title=f"Recall@k on {n_questions} test questions")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.legend(fontsize=8, loc="lower right")
    _finish(fig, save_to, "03_recall_at_k")


def rank_changes(plain_rank: Sequence[int], deep_rank: Sequence[int], depth: int = 100,
                 save_to: str | Path | None = None) -> None:
    """How far deep memory moved each test question's relevant chunk (plain rank minus deep-memory rank), for the
    questions it moved; the unchanged ones are counted in the title. When none moved, a sentence says so."""
    change = np.asarray(plain_rank) - np.asarray(deep_rank)
    moved = change[change != 0]
    if not moved.size:
        print(f"Deep memory moved no test question's relevant chunk: all {change.size} keep plain search's rank "
              "(no figure to draw).")
        return
    fig, ax = plt.subplots(figsize=(6, 3.2))
    clipped = np.clip(moved, -30, 30)
    bins = np.arange(clipped.min() - 0.5, clipped.max() + 1.5, 1)
    ax.hist(clipped[clipped > 0], bins=bins, color="tab:orange", label="moved up")
    if (clipped < 0).any():
        ax.hist(clipped[clipped < 0], bins=bins, color="tab:purple", label="moved down")
    ax.legend(fontsize=8)
    ax.set_xlim(min(-1, clipped.min()) - 1, max(1, clipped.max()) + 1)
    ax.set(xlabel=f"ranks moved up (plain - deep memory rank; {depth + 1} = not in top {depth}; clipped at 30)",
           ylabel="test questions", title=f"{(change > 0).sum()} moved up, {(change < 0).sum()} moved down "
                                          f"({(change == 0).sum()} unchanged, not drawn)")
    ax.xaxis.label.set_fontsize(9)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(fig, save_to, "03_rank_change")


def cost_curves(plain: dict[str, list[float]], deep: dict[str, list[float]], saved: dict[str, Any], baseline_k: int,
                save_to: str | Path | None = None) -> None:
    """Recall against k and against prompt tokens: the k deep memory needs for plain search's recall at
    ``baseline_k``, and the tokens that k costs. When the two are identical at every k, one line says so."""
    same = _same(plain["recall"], deep["recall"])
    curves = [(plain, "plain search" + (" and deep memory" + SAME if same else ""), PLAIN)]
    curves += [] if same else [(deep, "deep memory", DEEP)]
    fig, (ax_k, ax_t) = plt.subplots(1, 2, figsize=(9, 3.4))
    for curve, label, style in curves:
        ax_k.plot(curve["k"], curve["recall"], label=label, **{**style, "markersize": style["markersize"] * 0.7})
        ax_t.plot(curve["prompt_tokens"], curve["recall"], label=label, **{**style, "markersize": style["markersize"] * 0.7})
    k_plain, k_deep = saved.get("k_plain"), saved.get("k_deep")
    if not same and k_plain and k_deep and k_deep < k_plain:  # where each reaches the target: the saving
        for who, k, tokens, style in (("plain search", k_plain, saved["tokens_per_question_plain"], PLAIN),
                                      ("deep memory", k_deep, saved["tokens_per_question_deep"], DEEP)):
            ax_k.axvline(k, color=style["color"], linestyle=":", linewidth=1.2, label=f"{who} reaches it at k={k}")
            ax_t.axvline(tokens, color=style["color"], linestyle=":", linewidth=1.2,
                         label=f"{who}: {tokens:,.0f} tokens")
    for ax in (ax_k, ax_t):
        ax.axhline(saved["target_recall"], color="grey", linestyle=":",
                   label=f"target: plain search's recall at k={baseline_k}")
        ax.set(ylim=(0, 1), ylabel="recall@k")
        ax.legend(fontsize=7, loc="lower right")
    ax_k.set(xlabel="k (chunks in the prompt)", title="Recall vs chunks in the prompt")
    ax_k.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_t.set(xlabel="prompt tokens per question", title="Recall vs prompt tokens")
    _finish(fig, save_to, "05_cost")


def how_it_works(save_to: str | Path | None = None) -> None:
    """How Deep Memory works, as a diagram: for every question, the unchanged embedder, Deep Memory's layer (moves
    the question's vector), the unchanged index, then Deep Memory's memory (puts a remembered chunk into the
    results); both parts trained once from (question, chunk) pairs; the chunks embedded and indexed once."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(9, 4.4))
    ax.set(xlim=(0, 100), ylim=(0, 50))
    ax.axis("off")
    new, kept, io = "#fde3c8", "#dbe9f6", "white"
    boxes = {  # name: (x centre, y centre, width, text, face colour)
        "pairs": (22, 43, 24, "(question, relevant chunk) pairs\nwritten by an LLM", "#eeeeee"),
        "training": (57, 43, 20, "training, once\n(notebook 02)", new),
        "question": (6, 24, 11, "a question", io),
        "embedder": (22, 24, 13, "embedder\n(unchanged)", kept),
        "layer": (39, 24, 13, "Deep Memory\nlayer", new),
        "index": (57, 24, 13, "index\n(unchanged)", kept),
        "memory": (75, 24, 15, "Deep Memory\nmemory", new),
        "results": (93, 24, 11, "top k\nchunks", io),
        "chunks": (57, 5, 26, "chunks of the docs, embedded\nand indexed once (notebook 01)", "#eeeeee"),
    }
    half = 4.5
    for x, y, w, text, face in boxes.values():
        ax.add_patch(FancyBboxPatch((x - w / 2, y - half), w, 2 * half, boxstyle="round,pad=0.4,rounding_size=1.2",
                                    facecolor=face, edgecolor="0.35", linewidth=1))
        ax.text(x, y, text, ha="center", va="center", fontsize=8)

    def edge(name: str, side: str) -> tuple[float, float]:
        x, y, w, *_ = boxes[name]
        return {"left": (x - w / 2 - 0.7, y), "right": (x + w / 2 + 0.7, y), "top": (x, y + half + 0.9),
                "bottom": (x, y - half - 0.9)}[side]

    def arrow(start: tuple[float, float], end: tuple[float, float], label: str = "", dashed: bool = False,
              at: tuple[float, float] | None = None, ha: str = "center") -> None:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, color="0.25", linewidth=1.1,
                                     linestyle="--" if dashed else "-"))
        if label:
            x, y = at or ((start[0] + end[0]) / 2, start[1] + 1.2)
            ax.text(x, y, label, ha=ha, va="bottom", fontsize=7, color="0.3")

    for a, b, label in (("question", "embedder", ""), ("embedder", "layer", "q"), ("layer", "index", "q'"),
                        ("index", "memory", "hits"), ("memory", "results", "")):
        arrow(edge(a, "right"), edge(b, "left"), label)
    arrow(edge("pairs", "right"), edge("training", "left"))
    arrow(edge("training", "bottom"), edge("layer", "top"), "a better question-to-text match", dashed=True,
          at=(46.5, 33.5), ha="right")
    arrow(edge("training", "bottom"), edge("memory", "top"), "which chunks people ask about", dashed=True,
          at=(67.5, 33.5), ha="left")
    arrow(edge("chunks", "top"), edge("index", "bottom"), "chunk vectors", dashed=True, at=(58.5, 12.5), ha="left")
    ax.text(1, 13.5, "For every question: the layer moves its vector (q to q'), the\nmemory puts the chunk of a very "
            "similar training\nquestion into the hits. The chunks are never re-embedded.", fontsize=7.5,
            color="0.2", va="center")
    _finish(fig, save_to, "how_deep_memory_works")
