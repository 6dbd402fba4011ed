"""`embed-launcher`: run the server in the foreground (a thin click translator over Launcher)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

import click

from . import __version__
from .console import Console
from .errors import EXIT_FAILURE, LauncherError


def run_guarded(action: Callable[[], int], console: Console, environ: dict[str, str] | None = None) -> int:
    """The error funnel: a LauncherError becomes its message and exit code; nothing else leaks a traceback.

    Set EMBED_DEBUG=1 to see the traceback of an unexpected error.
    """
    environ = dict(os.environ) if environ is None else environ
    try:
        return action()
    except LauncherError as exc:
        if exc.message:  # empty when whoever failed has already said why
            console.error(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if environ.get("EMBED_DEBUG"):
            console.error(traceback.format_exc().rstrip())
        console.error(f"Error: unexpected {type(exc).__name__}: {exc}. Re-run with EMBED_DEBUG=1 for details.")
        return EXIT_FAILURE


def line_buffered() -> None:
    """Each line reaches docker logs / journald as it is written, even through a pipe."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


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
    from .launcher import Launcher
    from .sdnotify import Notifier

    line_buffered()
    console = Console()
    launcher = Launcher(os.environ, console, notifier=Notifier(os.environ))
    sys.exit(run_guarded(lambda: launcher.run(check_only=check), console))


def main() -> None:
    """Console-script entry point."""
    launcher_command()
