"""Tooling, not tutorial: running and refreshing the notebooks (``make run``, ``make notebooks``)."""
