"""Plumbing: errors and argument checks, crash-safe writes, the seed helper, progress bars, notebook records."""
