"""Plumbing: errors and argument checks, crash-safe writes, the seed helper, notebook records."""
