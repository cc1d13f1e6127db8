"""Run the numbered notebooks with papermill (``make run``) and keep committed notebooks clean.

    python -m dmhelpers.tooling.notebooks run [--out runs/NAME]   # 01 -> 05 on the offline default, into a run folder
    python -m dmhelpers.tooling.notebooks refresh                 # re-execute the committed notebooks in place, cleaned
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from dmhelpers.utils.record import read_records

KERNEL = os.environ.get("DM_KERNEL", "python3")
CELL_TIMEOUT = int(os.environ.get("DM_CELL_TIMEOUT", "1800"))
PATTERN = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")


def numbered_notebooks(folder: str | Path = "notebooks") -> list[Path]:
    """The tutorial's notebooks (``NN_name.ipynb``) in reading order."""
    return sorted(p for p in Path(folder).iterdir() if PATTERN.match(p.name))


def notebook_parameters(path: str | Path) -> set[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def execute(src: str | Path, out: str | Path, parameters: dict[str, Any] | None = None,
            cwd: str | Path | None = None) -> dict[str, Any]:
    """Execute ``src`` into ``out`` with papermill (cwd: the notebook's folder) and return what it recorded."""
    import papermill

    src = Path(src)
    unknown = set(parameters or {}) - notebook_parameters(src)
    if unknown:
        raise ValueError(f"{src.name} has no parameters {sorted(unknown)}; it takes {sorted(notebook_parameters(src))}.")
    papermill.execute_notebook(str(src), str(out), parameters=parameters or {}, kernel_name=KERNEL,
                               cwd=str(cwd or src.parent), execution_timeout=CELL_TIMEOUT, progress_bar=False)
    return read_records(out)


def clean(path: str | Path) -> None:
    """Strip run-specific metadata (timings, papermill, widget state) so a committed notebook has no drift."""
    nb = json.loads(Path(path).read_text("utf-8"))
    nb["metadata"] = {k: v for k, v in nb["metadata"].items() if k in ("kernelspec", "language_info")}
    nb["metadata"].get("language_info", {}).pop("version", None)
    for cell in nb["cells"]:
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in ("tags",)}
        if cell.get("metadata", {}).get("tags") == ["injected-parameters"]:
            raise ValueError(f"{path} holds papermill-injected parameters; refresh it without parameters.")
        cell.pop("id", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = [o for o in cell["outputs"] if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    nb["nbformat_minor"] = 4
    Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", "utf-8")


def summarise(records: dict[str, dict[str, Any]], seconds: dict[str, float]) -> str:
    """The end of ``make run``: the headline numbers, each next to its baseline, and the time of each notebook."""
    by_number = {name[:2]: rec for name, rec in records.items()}
    lines = ["Summary (offline default)"]
    if "chunks" in by_number.get("01", {}):
        lines.append(f"  chunks in the store:       {by_number['01']['chunks']:,}")
    if "n_questions" in by_number.get("02", {}):
        r = by_number["02"]
        lines.append(f"  questions:                 {r['n_questions']} ({r['n_train']} train, {r['n_test']} test)")
    ev = by_number.get("03", {})
    if ev.get("with_model"):
        lines.append(f"  Recall@10 on test questions: {ev['without_model']['recall@10']:.0%} without -> "
                     f"{ev['with_model']['recall@10']:.0%} with Deep Memory")
        for kind in ("seen chunks", "new chunks"):
            if kind not in ev.get("by_chunk", {}):
                continue
            row = ev["by_chunk"][kind]
            lines.append(f"    {kind + ' (' + str(row['n']) + ')':<22} {row['without model']['recall@10']:.0%} -> "
                         f"{row['with model']['recall@10']:.0%}")
    cost = by_number.get("05", {})
    if "tokens_saved_per_1000" in cost:
        lines.append(f"  prompt tokens saved per 1,000 questions: {cost['tokens_saved_per_1000']:,.0f} (deep memory at "
                     f"k={cost['k_deep']} vs plain search at k={cost['baseline_k']}, same recall; "
                     f"${cost['dollars_saved_per_1000']:.2f} at ${cost['price_per_mtok']}/M tokens)")
    lines.append("  time: " + ", ".join(f"{name[:2]} {sec:.0f} s" for name, sec in seconds.items())
                 + f"; total {sum(seconds.values()):.0f} s")
    return "\n".join(lines)


def run_all(out: Path, folder: str | Path = "notebooks") -> None:
    """Run every numbered notebook in order on its defaults, writing executed copies and figures to ``out``."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    figures = out / "figures"
    records: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for nb in numbered_notebooks(folder):
        params = {"FIGURE_DIR": str(figures)} if "FIGURE_DIR" in notebook_parameters(nb) else {}
        start = time.perf_counter()
        print(f"running {nb.name} ...", flush=True)
        records[nb.stem] = execute(nb, out / nb.name, params)
        seconds[nb.stem] = time.perf_counter() - start
        print(f"  done in {seconds[nb.stem]:.0f} s", flush=True)
    print("\n" + summarise(records, seconds))
    print(f"\nExecuted notebooks: {out}/\nFigures: {figures}/")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dmhelpers.tooling.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run all notebooks into a run folder")
    run.add_argument("--out", type=Path, default=None, help="run folder (default runs/YYYYmmdd-HHMMSS)")
    sub.add_parser("refresh", help="re-execute the committed notebooks in place and clean them")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_all(args.out or Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    else:
        for nb in numbered_notebooks():
            print(f"refreshing {nb.name} ...", flush=True)
            execute(nb, nb)
            clean(nb)


if __name__ == "__main__":
    main()
