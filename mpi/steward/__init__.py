"""Stewardship: the review queue, pair labels, link constraints and the model lifecycle.

Owns: what a data steward does to the registry (decide review items, label pairs, pin or
forbid links, merge and split persons) and to its models (train, evaluate, promote, analyse).
"""
