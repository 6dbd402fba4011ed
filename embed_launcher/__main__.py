"""`python -m embed_launcher` runs the launcher, like the `embed-launcher` console script."""

from embed_launcher.cli import main

main()
