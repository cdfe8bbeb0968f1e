"""Stewardship: review, labels, constraints, model versions, training, evaluation, reports."""
