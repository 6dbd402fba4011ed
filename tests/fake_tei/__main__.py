"""`text-embeddings-router` 1.9.3 stand-in: the entry point (see README.md for what it models and its knobs)."""

from __future__ import annotations

import os
import signal
import sys

from fake_tei.boot import Knobs, fatal, main_with

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python's KeyboardInterrupt handler is not TEI's
    try:
        main_with(sys.argv[1:], dict(os.environ), Knobs.from_env(os.environ))
    except SystemExit:
        raise
    except BaseException as exc:  # a bug in the fake must still look like a TEI failure, not hang
        fatal("Fake TEI internal error", f"{type(exc).__name__}: {exc}")
