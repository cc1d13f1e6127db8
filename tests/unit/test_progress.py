"""Progress bars stay out of saved notebooks: TQDM_DISABLE turns off tqdm's notebook bar too."""
from __future__ import annotations

import tqdm.notebook

from dmhelpers.utils import progress


def test_tqdm_disable_turns_off_the_notebook_bar_that_ignores_it(monkeypatch):
    monkeypatch.setattr(progress, "tqdm", tqdm.notebook.tqdm)  # what tqdm.auto gives in a kernel; it ignores the env
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress.progress_bar(total=3).disable
    monkeypatch.setenv("TQDM_DISABLE", "")
    assert progress.progress_disabled() is False
    assert progress.progress_bar(total=3, disable=True).disable
