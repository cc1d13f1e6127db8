"""The tutorial's status table and job list lines for a Deep Memory job record."""
from __future__ import annotations

from typing import Any

from dmhelpers.deep_memory.adapter import CLOSED
from dmhelpers.deep_memory.insertion import describe


def evidence(job: dict[str, Any]) -> dict[str, Any] | None:
    """The held-out evidence that carries the job's model: the memory's when it acts without the layer, the
    layer's otherwise (None before the job is done)."""
    if job["status"] != "completed":
        return None
    memory, layer = job.get("insertion"), job.get("validation")
    if job.get("slots") and memory and not (job.get("alpha_out") or job.get("alpha") or job.get("beta")):
        return memory
    return layer or memory or None


def result_line(job: dict[str, Any]) -> str:
    val = evidence(job)
    if not val:
        return "not available yet" if job["status"] == "training" else job["status"]
    parts = []
    for name in ("seen", "new"):
        base, model = val["base"].get(name), val["model"].get(name)
        if base:
            change = 100 * (model["recall@10"] - base["recall@10"])
            parts.append(f"{name} {base['recall@10']:.1%} -> {model['recall@10']:.1%} ({change:+.1f} pts)")
    return "recall@10: " + ", ".join(parts)


def memory_summary(job: dict[str, Any]) -> str:
    """Where the memory acts, or "off"."""
    slots = [tuple(s) for s in job.get("slots", [])]
    return f"nearest training question's chunk put at {describe(slots)}" if slots else "off"


def memory_line(job: dict[str, Any]) -> str:
    """Where the memory acts and on how many held-out questions, or why it is off."""
    if not job.get("slots"):
        return ("off: no similarity threshold helped held-out questions about trained chunks without costing one "
                "about other chunks")
    ins = job.get("insertion") or {}
    opened = ins.get("opened", {})
    acted = " and ".join(f"{opened.get(k, 0)} of {n} {k}-chunk" for k, n in ins.get("n", {}).items())
    return f"{memory_summary(job)}; acted on {acted} held-out questions"


def layer_summary(job: dict[str, Any]) -> str:
    """The layer's strength and epochs, or "off"."""
    if not (job.get("alpha") or job.get("beta") or job.get("alpha_out")):
        return "off"
    epochs = job.get("epochs_chosen", 0)
    return f"strength {job.get('alpha_out', 0.0):.2f} after {epochs} epoch{'s' * (epochs != 1)}"


def model_summary(job: dict[str, Any]) -> str:
    """The model in a line: its job, where its memory acts and what its layer does (and, when neither acts, that
    deep-memory search returns plain search's results)."""
    memory, layer = memory_summary(job), layer_summary(job)
    idle = " (neither acts: deep-memory search returns plain search's results)" if memory == layer == "off" else ""
    return f"{job['id']}; memory: {memory}; layer: {layer}{idle}"


def layer_line(job: dict[str, Any]) -> str:
    alpha, beta = job.get("alpha", 0.0), job.get("beta", 0.0)
    if layer_summary(job) == "off":
        rejected = (job.get("validation") or {}).get("rejected")
        why = rejected["why"] if rejected else "it did not help held-out training questions"
        return f"off: {why} (plain search ranks the rest)"
    tau = job.get("gate")
    gated = (f"; near training questions (similarity above {tau:.2f}) layer {alpha:.1f}, blend {beta:.1f}"
             if (alpha or beta) and tau is not None and tau < CLOSED else "")
    return layer_summary(job) + gated


def measured_on(job: dict[str, Any], n: dict[str, int]) -> str:
    """What the held-out figures were measured on, with why the counts can exceed the training questions."""
    folds = job.get("params", {}).get("folds", 4)
    parts = []
    if "new" in n:
        parts.append(f"{n['new']} new-chunk: each question held out once, with all questions about its chunk.")
    if "seen" in n:
        parts.append(f"{n['seen']} seen-chunk: one question of a chunk that has several, held out in each other "
                     "fold while the rest stay in training.")
    return f"held-out training questions, {folds} folds. " + " ".join(parts)


def format_status(job: dict[str, Any]) -> str:
    """The tutorial's status table: status, progress/eta, held-out recall@10 next to plain search, what acts."""
    width = 110
    line = "-" * width
    rows = [("status", job["status"])]
    if job["status"] == "training":
        eta = f"eta: {job['eta_s']:.1f} seconds" if job.get("eta_s") is not None else "eta: estimating"
        rows.append(("progress", f"{job['progress']:.0%}, {eta}"))
    rows.append(("results", result_line(job)))
    val = evidence(job)
    if val:
        rows.append(("measured on", measured_on(job, val["n"])))
        rows.append(("memory", memory_line(job)))
        rows.append(("layer", layer_line(job)))
        rows.append(("gain from", job.get("carried_by") or "nothing: plain search is kept"))
    out = [line, f"|{job['id']:^{width - 2}}|", line]
    for key, value in rows:
        while len(value) > width - 18:  # wrap long values at a space
            cut = value.rfind(" ", 0, width - 18)
            out.append(f"| {key:<11} | {value[:cut]:<{width - 18}} |")
            key, value = "", value[cut + 1:]
        out.append(f"| {key:<11} | {value:<{width - 18}} |")
        out.append(line)
    return "\n".join(out)
