"""Linkage: the scorer against Splink, the blocking index, explanations, accuracy, Spark."""
