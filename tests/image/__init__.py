"""Tests of the container image, built and run with podman."""
