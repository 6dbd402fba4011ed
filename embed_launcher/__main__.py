"""`python -m embed_launcher` runs the launcher, like the `embed-launcher` console script."""

from .cli import main

main()
