"""Notebook hygiene, checked by a script: intro first, imports, a literal-only parameters cell, no drift."""
from __future__ import annotations

import ast
import json
import re

import numpy as np
import pytest
from helpers import NOTEBOOKS, REPO

from dmhelpers.tooling.notebooks import numbered_notebooks
from dmhelpers.utils.record import DIGITS, MIMETYPE, rounded

BOOKS = numbered_notebooks(NOTEBOOKS)


def test_notebooks_are_numbered_in_order():
    assert [p.name[:2] for p in BOOKS] == [f"{i:02d}" for i in range(1, len(BOOKS) + 1)] and BOOKS


@pytest.mark.parametrize("path", BOOKS, ids=[p.name for p in BOOKS])
def test_notebook_form(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"][0].startswith("# ")
    first_code = next(c for c in cells if c["cell_type"] == "code")
    assert all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in ast.parse("".join(first_code["source"])).body)
    params = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1 and cells.index(params[0]) == cells.index(first_code) + 1
    for stmt in ast.parse("".join(params[0]["source"])).body:  # literals only: derived values go in the next cell
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
        ast.literal_eval(stmt.value)
    assert nb["metadata"]["kernelspec"]["name"] == "python3" and "papermill" not in nb["metadata"]
    for cell in cells:
        assert set(cell["metadata"]) <= {"tags", "jupyter"}, "cell metadata (timings, papermill) must be cleaned"
        if "".join(cell["source"]).startswith("# Results for the tests"):  # plumbing: shown folded in JupyterLab
            assert cell["metadata"].get("jupyter") == {"source_hidden": True}
        if cell["cell_type"] == "code":
            assert cell["execution_count"] is not None, "committed notebooks carry the outputs of a real offline run"
            for out in cell["outputs"]:
                assert out.get("name") != "stderr" and out["output_type"] != "error"
                assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {}), \
                    "a progress bar in a saved notebook shows frozen at 0% (widget state is not saved)"
    assert any(MIMETYPE in o.get("data", {}) for c in cells for o in c.get("outputs", [])), "no recorded results"
    text = json.dumps([c.get("outputs", []) for c in cells])
    assert not re.search(r"/(root|home|Users|tmp)/", text), "machine paths in outputs"
    assert not re.search(r"sk-[A-Za-z0-9]{16,}", text), "something like an API key in outputs"


def test_fresh_copy_puts_the_notebooks_beside_an_empty_data_folder(tmp_path):
    """nbval and `make notebooks` run these copies: a store or model in the user's data/ cannot leak into them."""
    from dmhelpers.tooling.notebooks import fresh_copy

    stale = tmp_path / "nbval" / "data" / "store"
    stale.mkdir(parents=True)
    copies = fresh_copy(tmp_path / "nbval", NOTEBOOKS)
    assert [c.name for c in copies] == [p.name for p in BOOKS]
    assert all(c.read_bytes() == p.read_bytes() for c, p in zip(copies, BOOKS))
    assert list((tmp_path / "nbval" / "data").iterdir()) == []


def floats(value):
    """Every float in a JSON value."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from floats(v)
    elif isinstance(value, list):
        for v in value:
            yield from floats(v)


@pytest.mark.parametrize("path", BOOKS, ids=[p.name for p in BOOKS])
def test_recorded_numbers_are_rounded_so_every_machine_records_the_same(path):
    """nbval compares records exactly: float32 noise from another CPU or BLAS (0.7716417908668518 here,
    0.7716419696807861 there) must not be in them."""
    cells = json.loads(path.read_text())["cells"]
    recorded = [o["data"][MIMETYPE] for c in cells for o in c.get("outputs", []) if MIMETYPE in o.get("data", {})]
    noisy = [x for r in recorded for x in floats(r) if rounded(x, DIGITS) != x]
    assert not noisy, f"unrounded floats in {path.name}'s records: {noisy[:3]}"


def test_record_rounds_floats_everywhere_in_its_values():
    assert rounded({"a": 0.7716417908668518, "b": [0.123456789, (1, 2.000049)], "c": "x", "d": True}) == \
        {"a": 0.7716, "b": [0.1235, [1, 2.0]], "c": "x", "d": True}
    assert rounded(0.0000321987) == 0.00003220 and rounded(1234.56789) == 1234.5679 and rounded(0.0) == 0.0


def test_make_run_gives_each_notebook_paths_relative_to_its_own_folder(tmp_path):
    from dmhelpers.tooling.notebooks import run_parameters

    figures = NOTEBOOKS.parent / "runs" / "20260101-000000" / "figures"
    params = run_parameters(BOOKS[1], "workshop", figures)
    assert params["FIGURE_DIR"] == "../runs/20260101-000000/figures"
    assert params["STORE_PATH"] == "../data/workshop-store"


def test_the_readme_figure_of_how_deep_memory_works_is_the_one_the_package_draws(tmp_path):
    from PIL import Image

    from dmhelpers.tooling.notebooks import DOCS_FIGURES, draw_docs_figures

    draw_docs_figures(tmp_path)
    committed, drawn = (np.asarray(Image.open(p / "how_deep_memory_works.png").convert("L"), dtype=float)
                        for p in (REPO / DOCS_FIGURES, tmp_path))
    assert committed.shape == drawn.shape, "the figure changed size: run `make notebooks` to redraw it"
    assert np.abs(committed - drawn).mean() < 1.0, "the figure changed: run `make notebooks` to redraw it"
    assert f"]({DOCS_FIGURES.as_posix()}/how_deep_memory_works.png)" in (REPO / "README.md").read_text()
