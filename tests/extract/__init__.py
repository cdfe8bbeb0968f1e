"""Research extracts: disclosure control, builds, packages, aggregates and the workflow."""
