"""The one error funnel (run_guarded) and the output set-up every command shares (line_buffered)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_FAILURE, LauncherError


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
