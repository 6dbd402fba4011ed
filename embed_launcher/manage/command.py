"""`embed_manage`: inspect and manage a running (or stopped) server from its data directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from embed_launcher.reporting.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK

ACTIONS = ("showinfo", "showkey", "getkey", "status", "alive", "reload", "listmodels", "listrerankers", "pullmodel",
           "listkeys")
KEY_OPTIONS = ("scopes", "models", "expires", "rpm")
USAGE = """Usage: embed_manage <action> [--json]

Actions (exactly one):
  --showinfo           Show endpoints, models and usage examples of the running server
  --showkey            Show the API key(s) in a box
  --getkey             Print the raw API key (no newline when piped, for scripts)
  --status [--json]    Each service's model, port, pid, state, uptime, restarts and health
                       (ready, busy or unhealthy); exit 0 only when every enabled service is
                       ready or busy (a readiness check)
  --alive              Exit 0 while the launcher runs and is not stuck, whatever its TEI
                       children are doing (a liveness check)
  --reload [--timeout S]  Re-read the env file and the models file without a restart (as SIGHUP
                       does); wait for the outcome (default 900 s): exit 0 once the new
                       configuration serves, 1 with the reason if the reload failed
  --listmodels         Recommended embedding models (cached ones marked, with size)
  --listrerankers      Recommended reranker models (cached ones marked, with size)
  --pullmodel <model>  Download a model's TEI file set into the data directory
  --addkey ID [--scopes embed,rerank,metrics] [--models NAME,...] [--expires RFC3339] [--rpm N]
                       Add an API key to the keys file; prints the key once (only its hash is
                       stored). Defaults: scopes embed,rerank; every model; no expiry; no limit
  --listkeys           The keys file's keys: id, scopes, models, expiry, last use
  --revokekey ID       Remove a key; the gateway refuses it (401) at once
  -h, --help           Show this help

Reads EMBED_DATA_DIR (default /var/lib/embeddings) and the state files the launcher writes
there, plus EMBED_ENV_FILE (default /embed.env) for EMBED_HF_TOKEN and EMBED_LOCAL_ONLY.
The keys file is EMBED_API_KEYS_FILE, else <data dir>/keys.toml.

Examples:
  docker exec embeddings embed_manage --getkey
  docker exec embeddings embed_manage --pullmodel BAAI/bge-m3
  embed_manage --status --json
  embed_manage --addkey search-app --scopes embed --models small --expires 2027-01-01T00:00:00Z
"""
MISSING_MODEL = "Missing model ID. Usage: --pullmodel <model>"


class ManageCommand(click.Command):
    """Keeps the original's messages for usage mistakes: unknown parameter, one action at a time."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            raise click.UsageError(f"Unknown parameter: {exc.option_name}") from None
        except click.BadOptionUsage as exc:
            if exc.option_name in ("pullmodel", "--pullmodel"):
                raise click.UsageError(MISSING_MODEL) from None
            if exc.option_name in ("addkey", "--addkey", "revokekey", "--revokekey"):
                raise click.UsageError(f"Missing key id. Usage: {exc.option_name} ID") from None
            raise

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write(USAGE)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Usage mistakes print one ``Error:`` line and exit 2, never click's usage dump."""
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(EXIT_CONFIG)
        except click.Abort:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


@click.command(cls=ManageCommand, context_settings={"help_option_names": ["-h", "--help"]}, add_help_option=True)
@click.option("--showinfo", is_flag=True)
@click.option("--showkey", is_flag=True)
@click.option("--getkey", is_flag=True)
@click.option("--status", is_flag=True)
@click.option("--alive", is_flag=True)
@click.option("--reload", is_flag=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS")
@click.option("--listmodels", is_flag=True)
@click.option("--listrerankers", is_flag=True)
@click.option("--pullmodel", metavar="MODEL")
@click.option("--listkeys", is_flag=True)
@click.option("--addkey", metavar="ID")
@click.option("--revokekey", metavar="ID")
@click.option("--scopes", metavar="LIST")
@click.option("--models", metavar="LIST")
@click.option("--expires", metavar="RFC3339")
@click.option("--rpm", type=int, metavar="N")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (with --status).")
def manage_command(as_json: bool, pullmodel: str | None, addkey: str | None, revokekey: str | None,
                   scopes: str | None, models: str | None, expires: str | None, rpm: int | None,
                   timeout: float | None, **flags: bool) -> int:
    """Inspect and manage the embeddings server."""
    chosen = [name for name in ACTIONS if flags.get(name)] + (["pullmodel"] if pullmodel is not None else [])
    chosen += [name for name, value in (("addkey", addkey), ("revokekey", revokekey)) if value is not None]
    if pullmodel is not None and (not pullmodel.strip() or pullmodel.startswith("-")):
        raise click.UsageError(MISSING_MODEL)  # `--pullmodel --getkey`: an option, not a model id
    for name, value in (("--addkey", addkey), ("--revokekey", revokekey)):
        if value is not None and (not value.strip() or value.startswith("-")):
            raise click.UsageError(f"Missing key id. Usage: {name} ID")
    key_options = {"scopes": scopes, "models": models, "expires": expires, "rpm": rpm}
    given = [f"--{name}" for name, value in key_options.items() if value is not None]
    if given and chosen != ["addkey"]:
        raise click.UsageError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --addkey.")
    if not chosen:
        click.echo(USAGE, err=True, nl=False)
        return EXIT_FAILURE
    if len(chosen) > 1:
        raise click.UsageError("Specify only one action at a time.")
    if as_json and chosen[0] != "status":
        raise click.UsageError("--json goes with --status.")
    if timeout is not None and chosen[0] != "reload":
        raise click.UsageError("--timeout goes with --reload.")
    return run_action(chosen[0], dict(os.environ), as_json=as_json, model=pullmodel,
                      key_id=addkey or revokekey, key_options=key_options, timeout_s=timeout)


def run_action(action: str, environ: dict[str, str], *, as_json: bool = False, model: str | None = None,
               key_id: str | None = None, key_options: dict[str, Any] | None = None,
               timeout_s: float | None = None) -> int:
    """Run one action through the error funnel; returns the exit code."""
    from embed_launcher.reporting.console import Console
    from embed_launcher.reporting.funnel import run_guarded

    console = Console()
    handlers: dict[str, Callable[[], int]] = {
        "getkey": lambda: _keys().get_key(environ),
        "showkey": lambda: _keys().show_key(environ, console),
        "showinfo": lambda: _info().show_info(environ, console),
        "status": lambda: _status().show_status(environ, console, as_json=as_json),
        "alive": lambda: _alive().show_alive(environ, console),
        "reload": lambda: _reload().reload(environ, console, **({"timeout_s": timeout_s} if timeout_s else {})),
        "listmodels": lambda: _models().list_models(environ, console, rerankers=False),
        "listrerankers": lambda: _models().list_models(environ, console, rerankers=True),
        "pullmodel": lambda: _models().pull(environ, console, model or ""),
        "addkey": lambda: _apikeys().add_key(environ, console, key_id or "", **(key_options or {})),
        "listkeys": lambda: _apikeys().list_keys(environ, console),
        "revokekey": lambda: _apikeys().revoke_key(environ, console, key_id or ""),
    }
    return run_guarded(handlers[action], console, environ)


# Each action lives in its own module, imported only when used: --getkey must stay fast.
def _keys() -> Any:
    from embed_launcher.manage import keys as manage_keys

    return manage_keys


def _apikeys() -> Any:
    from embed_launcher.manage import apikeys as manage_apikeys

    return manage_apikeys


def _info() -> Any:
    from embed_launcher.manage import info as manage_info

    return manage_info


def _status() -> Any:
    from embed_launcher.manage import status as manage_status

    return manage_status


def _alive() -> Any:
    from embed_launcher.manage import alive as manage_alive

    return manage_alive


def _reload() -> Any:
    from embed_launcher.manage import reload as manage_reload

    return manage_reload


def _models() -> Any:
    from embed_launcher.manage import models as manage_models

    return manage_models


def main() -> None:
    """Console-script entry point."""
    manage_command.main()
