"""`python -m embed_launcher.gateway`: read EMBED_GATEWAY_CONFIG and the keys, then serve (or run the workers)."""

from __future__ import annotations

import os
import signal
import sys

from embed_launcher.gateway import logs
from embed_launcher.gateway.app import Keys
from embed_launcher.gateway.config import GatewayConfig, GatewayConfigError
from embed_launcher.gateway.keystore import KeyStore
from embed_launcher.gateway.serve import config_file, ready_line, run_single, run_worker, say
from embed_launcher.gateway.tokens import decoder
from embed_launcher.gateway.workers import READY_FD_VAR, Workers
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_CONFIG, LauncherError
from embed_launcher.reporting.funnel import line_buffered, run_guarded


def load(environ: dict[str, str]) -> GatewayConfig:
    text = environ.get("EMBED_GATEWAY_CONFIG")
    if not text:
        raise LauncherError("Error: EMBED_GATEWAY_CONFIG is not set", EXIT_CONFIG)
    try:
        return GatewayConfig.from_json(text)
    except GatewayConfigError as exc:
        raise LauncherError(f"Error: {exc}", EXIT_CONFIG) from None


def main(argv: list[str], environ: dict[str, str], console: Console | None = None) -> int:
    # SIGHUP means "re-read the keys file": until the loop handles it, it must not kill a starting gateway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config, keys = load(environ), Keys.from_environ(environ)
    logs.configure(config.log_format)  # every line from here on, the access log's too
    if console is not None:
        console.use_format(config.log_format)  # the funnel's last words
    if config.token_input == "decode":
        decoder()  # tiktoken and its encoding, found now: a missing one is a clear error, not a failing request
    if "--worker" in argv:
        return run_worker(config, keys, KeyStore.from_environ(environ, config.workers), int(environ[READY_FD_VAR]),
                          config_file(environ))
    if config.workers == 1:
        return run_single(config, keys, KeyStore.from_environ(environ), config_file(environ))
    return Workers(config.workers, environ, say, ready_line(config)).run()


if __name__ == "__main__":
    line_buffered()
    environ = dict(os.environ)
    console = Console(colour=False, logger=logs.LOGGER)
    sys.exit(run_guarded(lambda: main(sys.argv[1:], environ, console), console, environ))
