"""`embed-launcher`: run the server in the foreground (a thin click translator over Launcher)."""

from __future__ import annotations

import os
import sys

import click

from embed_launcher import __version__
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.funnel import line_buffered, run_guarded


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="embed-launcher")
@click.option(
    "--check", is_flag=True, help="Validate the configuration and the TEI binary, then exit (0 valid, 2 not)."
)
def launcher_command(check: bool) -> None:
    """Serve embeddings (and optionally reranking) with Hugging Face TEI.

    Configuration comes from the environment and the env file (EMBED_ENV_FILE, default
    /embed.env). Exit codes: 0 clean stop, 1 failure, 2 configuration error.

    \b
    Examples:
      EMBED_DATA_DIR=./data embed-launcher
      RERANK_ENABLED=true EMBED_DATA_DIR=./data embed-launcher
    """
    from embed_launcher.startup.launcher import Launcher
    from embed_launcher.supervision.sdnotify import Notifier

    line_buffered()
    # JSON from the first line when the environment asks for it (the env file is read later, by load)
    console = Console(json=os.environ.get("EMBED_LOG_FORMAT", "").strip().lower() == "json")
    launcher = Launcher(os.environ, console, notifier=Notifier(os.environ))
    sys.exit(run_guarded(lambda: launcher.run(check_only=check), console))


def main() -> None:
    """Console-script entry point."""
    launcher_command()
