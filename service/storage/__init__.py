"""Artifact storage: one small interface, a local-directory backend (and GCS)."""
