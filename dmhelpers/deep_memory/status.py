"""The tutorial's status table and job list lines for a Deep Memory job record."""
from __future__ import annotations

from typing import Any

from dmhelpers.deep_memory.adapter import CLOSED


def result_line(job: dict[str, Any]) -> str:
    val = job.get("validation")
    if job["status"] != "completed" or not val:
        return "not available yet" if job["status"] == "training" else job["status"]
    parts = []
    for name in ("seen", "new"):
        base, model = val["base"].get(name), val["model"].get(name)
        if base:
            change = 100 * (model["recall@10"] - base["recall@10"])
            parts.append(f"{name} {base['recall@10']:.0%} -> {model['recall@10']:.0%} ({change:+.0f} pts)")
    return "recall@10: " + ", ".join(parts)


def format_status(job: dict[str, Any]) -> str:
    """The tutorial's status table: status, progress/eta, recall@10 next to plain search, what the model is."""
    width = 96
    line = "-" * width
    rows = [("status", job["status"])]
    if job["status"] == "training":
        eta = f"eta: {job['eta_s']:.1f} seconds" if job.get("eta_s") is not None else "eta: estimating"
        rows.append(("progress", f"{job['progress']:.0%}, {eta}"))
    rows.append(("results", result_line(job)))
    if job.get("validation"):
        v = job["validation"]
        n = ", ".join(f"{count} {kind}-chunk" for kind, count in v["n"].items())
        rows.append(("measured on", f"held-out training questions: {n}"))
        tau = job.get("gate")
        gate = ("no gate" if tau is None else "closed" if tau >= CLOSED else f"opens above similarity {tau:.2f}")
        epochs = job.get("epochs_chosen", 0)
        rows.append(("gate", gate))
        rows.append(("model", f"behind the gate: layer {job['alpha']:.1f}, memory {job.get('beta', 0.0):.1f}; "
                              f"outside it: layer {job.get('alpha_out', 0.0):.2f}; {epochs} epoch{'s' * (epochs != 1)}"))
        rows.append(("gain from", job.get("carried_by") or "nothing: plain search is kept"))
    out = [line, f"|{job['id']:^{width - 2}}|", line]
    for key, value in rows:
        out.append(f"| {key:<11} | {value:<{width - 18}} |")
        out.append(line)
    return "\n".join(out)
