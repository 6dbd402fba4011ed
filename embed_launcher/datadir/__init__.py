"""The data directory: atomic writes, keys, state files and the live status."""
