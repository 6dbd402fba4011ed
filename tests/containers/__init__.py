"""Helpers for tests that run containers (podman)."""
