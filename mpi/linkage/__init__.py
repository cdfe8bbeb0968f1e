"""Matching: the one model definition in code and its two executors (Splink, in-process).

The only package that imports splink. Splink always runs on its own DuckDB connection (or a
Spark session), never on the registry file; data comes in as Arrow and plain results go out.
"""
