"""Run the numbered notebooks with papermill (``make run``) and commit them in the form JupyterLab saves.

    python -m dmhelpers.tooling.notebooks run [--preset workshop] [--out runs/NAME]   # 01 -> 05 into a run folder
    python -m dmhelpers.tooling.notebooks refresh     # re-execute the committed notebooks as a fresh clone would
    python -m dmhelpers.tooling.notebooks fresh-copy runs/nbval   # the notebooks beside an empty data/ (for nbval)

A fresh clone has an empty ``data/``; what the committed notebooks show must be what runs there print (01 says
whether a Deep Memory model from 02 still fits, which depends on what ``data/store`` already holds). So refresh
and nbval run copies of the notebooks next to an empty ``data/`` folder, and never touch the user's ``data/``.

Kernels run with ``TQDM_DISABLE=1``: progress bars are for people watching JupyterLab, not for saved outputs.
``refresh`` renders on one thread and nbval checks on all cores, so a number that depends on the machine's
arithmetic (float32 noise) fails ``make test`` instead of a fresh clone on another CPU.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from dmhelpers.llm import model_label
from dmhelpers.questions import REAL_SIBLINGS
from dmhelpers.utils.record import read_records

KERNEL = os.environ.get("DM_KERNEL", "python3")
CELL_TIMEOUT = int(os.environ.get("DM_CELL_TIMEOUT", "1800"))
PATTERN = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")
RENDER_THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # set to 1 by `refresh`


def numbered_notebooks(folder: str | Path = "notebooks") -> list[Path]:
    """The tutorial's notebooks (``NN_name.ipynb``) in reading order."""
    return sorted(p for p in Path(folder).iterdir() if PATTERN.match(p.name))


def fresh_copy(dest: str | Path, folder: str | Path = "notebooks") -> list[Path]:
    """Copy the numbered notebooks into ``dest/notebooks`` beside an empty ``dest/data`` (what a fresh clone has);
    return the copies in reading order. ``dest`` is replaced."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "notebooks").mkdir(parents=True)
    (dest / "data").mkdir()
    return [Path(shutil.copy2(nb, dest / "notebooks" / nb.name)) for nb in numbered_notebooks(folder)]


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
    os.environ.setdefault("TQDM_DISABLE", "1")  # inherited by the kernel: no progress bars in saved outputs
    papermill.execute_notebook(str(src), str(out), parameters=parameters or {}, kernel_name=KERNEL,
                               cwd=str(cwd or src.parent), execution_timeout=CELL_TIMEOUT, progress_bar=False)
    return read_records(out)


def _js_numbers(value: Any) -> Any:
    """Floats that are whole numbers written as JupyterLab's browser writes them (``0.0`` -> ``0``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


def stderr_outputs(notebook: str | Path | dict[str, Any]) -> list[str]:
    """The text of every stderr output (and error) in an executed notebook (a path, or the notebook already read):
    a student would see them as red boxes."""
    nb = notebook if isinstance(notebook, dict) else json.loads(Path(notebook).read_text("utf-8"))
    return ["".join(o.get("text", "")) or o.get("ename", "error") for c in nb["cells"] if c["cell_type"] == "code"
            for o in c["outputs"] if o.get("name") == "stderr" or o.get("output_type") == "error"]


def clean(path: str | Path) -> None:
    """Write an executed notebook in the form JupyterLab saves, so opening it leaves ``git status`` clean: no
    papermill or timing metadata, the ipykernel display name, the kernel's language_info, nbformat's key order and
    JSON whole numbers as the browser writes them. Refuses a notebook with stderr outputs or injected parameters."""
    import nbformat

    nb = json.loads(Path(path).read_text("utf-8"))
    if errors := stderr_outputs(nb):
        raise ValueError(f"{path} has stderr outputs (a student would see red boxes): {errors[0][:200]!r}")
    nb["metadata"] = {k: v for k, v in nb["metadata"].items() if k in ("kernelspec", "language_info")}
    nb["metadata"]["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("tags") == ["injected-parameters"]:
            raise ValueError(f"{path} holds papermill-injected parameters; refresh it without parameters.")
        # tags (the parameters cell) and JupyterLab's view state (a hidden record cell) are kept
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in ("tags", "jupyter") and v}
        cell.pop("id", None)
    nb["nbformat_minor"] = 4
    notebook = nbformat.from_dict(_js_numbers(nb))
    Path(path).write_text(nbformat.writes(notebook, version=4) + "\n", "utf-8")


def summarise(records: dict[str, dict[str, Any]], seconds: dict[str, float]) -> str:
    """The end of ``make run``: the headline numbers, each next to its baseline, and the time of each notebook."""
    by_number = {name[:2]: rec for name, rec in records.items()}
    lines = ["Summary"]
    if "chunks" in by_number.get("01", {}):
        lines.append(f"  chunks in the store:       {by_number['01']['chunks']:,}")
    if "n_questions" in by_number.get("02", {}):
        r = by_number["02"]
        by = f", by {model_label(r['llm'])}" if "llm" in r else ""
        lines.append(f"  questions:                 {r['n_questions']} ({r['n_train']} train, {r['n_test']} test){by}")
        if r.get("siblings", {}).get("n"):
            lines.append(f"    seen test question vs nearest training question: cosine median "
                         f"{r['siblings']['median']:.2f}, p10 {r['siblings']['p10']:.2f} (real users: "
                         f"{REAL_SIBLINGS['median']:.2f}, {REAL_SIBLINGS['p10']:.2f})")
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
                     f"k={cost['k_deep']} vs plain search at k={cost['k_plain']}, same recall; "
                     f"${cost['dollars_saved_per_1000']:.2f} at ${cost['price_per_mtok']}/M tokens)")
    lines.append("  time: " + ", ".join(f"{name[:2]} {sec:.0f} s" for name, sec in seconds.items())
                 + f"; total {sum(seconds.values()):.0f} s")
    return "\n".join(lines)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "workshop": {"PRESET": "workshop", "STORE_PATH": "../data/workshop-store"},  # 20 pages; 01 -> 05 in ~2 min
}


def run_parameters(nb: Path, preset: str, figures: Path) -> dict[str, Any]:
    """The parameters ``make run`` gives notebook ``nb``: its preset's, and the figure folder relative to the
    notebook's own folder (where it runs), so the executed copy shows no machine path."""
    known = notebook_parameters(nb)
    figure_dir = os.path.relpath(Path(figures).resolve(), Path(nb).parent.resolve())
    return {k: v for k, v in {**PRESETS[preset], "FIGURE_DIR": figure_dir}.items() if k in known}


def run_all(out: Path, folder: str | Path = "notebooks", preset: str = "default") -> None:
    """Run every numbered notebook in order on its defaults (or a preset's), writing executed copies and figures
    to ``out``."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    figures = out / "figures"
    records: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for nb in numbered_notebooks(folder):
        params = run_parameters(nb, preset, figures)
        start = time.perf_counter()
        print(f"running {nb.name} ...", flush=True)
        records[nb.stem] = execute(nb, out / nb.name, params)
        seconds[nb.stem] = time.perf_counter() - start
        print(f"  done in {seconds[nb.stem]:.0f} s", flush=True)
    print("\n" + summarise(records, seconds))
    print(f"\nExecuted notebooks: {out}/\nFigures: {figures}/")


DOCS_FIGURES = Path("docs") / "images"


def draw_docs_figures(folder: Path = DOCS_FIGURES) -> None:
    """Draw the README's figure of how Deep Memory works (the one notebook 02 shows) into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    from dmhelpers import plots

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "FigureCanvasAgg is non-interactive")
        plots.how_it_works(save_to=folder)
    print(f"drew {folder / 'how_deep_memory_works.png'}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dmhelpers.tooling.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run all notebooks into a run folder")
    run.add_argument("--out", type=Path, default=None, help="run folder (default runs/YYYYmmdd-HHMMSS)")
    run.add_argument("--preset", choices=sorted(PRESETS), default="default", help="the default run, or the workshop's")
    sub.add_parser("refresh", help="re-execute the committed notebooks as a fresh clone would, and clean them")
    copy = sub.add_parser("fresh-copy", help="copy the notebooks beside an empty data/ folder")
    copy.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        run_all(args.out or Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S"), preset=args.preset)
    elif args.command == "fresh-copy":
        fresh_copy(args.dest)
    else:
        # Rendered on one thread, checked by nbval on every core: another thread count sums float32 products in
        # another order, as another CPU or BLAS does, so noise that a reader would see fails `make test` here.
        os.environ.update({name: "1" for name in RENDER_THREADS})
        draw_docs_figures()
        for copy_ in fresh_copy(Path("runs") / "refresh"):
            print(f"refreshing {copy_.name} ...", flush=True)
            execute(copy_, copy_)
            clean(copy_)
            shutil.copyfile(copy_, Path("notebooks") / copy_.name)


if __name__ == "__main__":
    main()
