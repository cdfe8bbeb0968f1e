"""Versioned, immutable match-model files (`<name>-v<NNN>.json` + `.meta.json` sidecar)."""
