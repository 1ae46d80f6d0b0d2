"""Receipts against each other: the archive and its selectors, metrics, statistics, comparison, history."""
