"""Evaluation: recall@k and friends, the tutorial's evaluation table, RAGAS context recall, and cost."""
