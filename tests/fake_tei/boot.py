"""Lifecycle of the TEI stand-in: startup sequence, sockets, signals, fault knobs, exit codes."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from fake_tei.api import Engine, Info
from fake_tei.args import Args, args_debug
from fake_tei.cli import ClapExit, parse_args
from fake_tei.host import map_weights, read_host_facts, start_workers
from fake_tei.log import INFO, WARN, Logger, fd_sink
from fake_tei.server import FakeTeiServer, Settings
from fake_tei.source import ROUTER, StartupError, download, load_model

MAIN = ("text_embeddings_router", "router/src/main.rs")
SERVER = ("text_embeddings_router::http::server", "router/src/http/server.rs")
LOGGED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


@dataclass(frozen=True)
class Knobs:
    """The FAKE_TEI_* fault-injection settings (see the fake_tei module docstring)."""

    load_s: float = 0.2
    fail_start: int | None = None
    exit_after_s: float | None = None
    exit_code: int = 1
    health_file: str | None = None
    ignore_term: bool = False
    slow_exit_s: float = 0.0
    request_delay_s: float = 0.0
    spawn_grandchild: bool = False
    grandchild_pid_file: str | None = None
    orphan_grandchild: bool = False
    orphan_s: float = 0.5
    spew_bytes: int = 0
    signal_log: str | None = None
    hub_fail: bool = False
    model_type: str | None = None
    batch_s: float = 0.0
    die_mid_body: bool = False
    cuda_oom_gpus: tuple[str, ...] = ()
    env_log: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Knobs:
        def get(name: str, conv, default):
            value = env.get("FAKE_TEI_" + name)
            return default if value in (None, "") else conv(value)
        flag = lambda v: v not in ("0", "false", "no")  # noqa: E731
        return cls(get("LOAD_S", float, 0.2), get("FAIL_START", int, None), get("EXIT_AFTER_S", float, None),
                   get("EXIT_CODE", int, 1), get("HEALTH_FILE", str, None), get("IGNORE_TERM", flag, False),
                   get("SLOW_EXIT_S", float, 0.0), get("REQUEST_DELAY_S", float, 0.0),
                   get("SPAWN_GRANDCHILD", flag, False), get("GRANDCHILD_PID_FILE", str, None),
                   get("ORPHAN_GRANDCHILD", flag, False), get("ORPHAN_S", float, 0.5),
                   get("SPEW_BYTES", int, 0), get("SIGNAL_LOG", str, None), get("HUB_FAIL", flag, False),
                   get("MODEL_TYPE", str, None), get("BATCH_S", float, 0.0), get("DIE_MID_BODY", flag, False),
                   get("CUDA_OOM_GPUS", lambda v: tuple(v.split(",")), ()), get("ENV_LOG", str, None))


def die(code: int) -> NoReturn:
    """Exit with `code`, or be killed by signal `-code` when it is negative."""
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot (and need not) be reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(5)
    os._exit(code)


def fatal(context: str, cause: str | None = None, code: int = 1) -> NoReturn:
    """What `main` returning an anyhow error prints on stderr, then exit 1."""
    text = f"Error: {context}\n" + (f"\nCaused by:\n    {cause}\n" if cause else "")
    os.write(2, text.encode())
    die(code)


def panic(message: str, location: str) -> NoReturn:
    """`panic = "abort"` in TEI's release profile: message on stderr, then SIGABRT."""
    os.write(2, f"\nthread 'main' panicked at {location}:\n{message}\nnote: run with `RUST_BACKTRACE=1` "
                "environment variable to display a backtrace\n".encode())
    signal.signal(signal.SIGABRT, signal.SIG_DFL)
    os.abort()


class Signals:
    """TEI's signal behaviour: default actions until Ready, then graceful shutdown once, then ignore."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs, self.stop, self.received = knobs, threading.Event(), 0

    def record(self, signum: int) -> None:
        if self.knobs.signal_log:
            with open(self.knobs.signal_log, "a", encoding="utf-8") as handle:
                handle.write(signal.Signals(signum).name.removeprefix("SIG") + "\n")

    def install_default(self) -> None:
        if self.knobs.signal_log:  # record, then let the default action happen as it would have
            for signum in LOGGED_SIGNALS:
                signal.signal(signum, self._record_then_default)

    def _record_then_default(self, signum: int, _frame: object) -> None:
        self.record(signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def install_ready(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._graceful)

    def _graceful(self, signum: int, _frame: object) -> None:
        self.record(signum)
        if not self.knobs.ignore_term:
            self.received += 1
            self.stop.set()


def bind_check(host: str, port: int) -> None:
    """A synchronous bind + listen + close, as metrics-exporter-prometheus's `build()` does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)


def socket_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_host(hostname: str, logger: Logger) -> str:
    """Rust's `IpAddr` parse of `--hostname`; anything else falls back to 0.0.0.0 with a WARN."""
    try:
        if "%" in hostname:
            raise ValueError(hostname)
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        logger.log(WARN, *ROUTER, 367, "Invalid hostname, defaulting to 0.0.0.0")
        return "0.0.0.0"


def _prompts(root: Path) -> dict[str, str]:
    """The model's Sentence Transformers prompts (config_sentence_transformers.json), by name."""
    import json
    try:
        prompts = json.loads((root / "config_sentence_transformers.json").read_text()).get("prompts") or {}
    except (OSError, ValueError, AttributeError):
        prompts = {}
    return {str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}


def _prompt(args: Args, root: Path) -> str | None:
    """The default prompt text, or the startup error TEI gives for an unknown `--default-prompt-name`."""
    name = args.text("default_prompt_name")
    if name is None:
        return args.text("default_prompt")
    import json
    try:
        prompts = json.loads((root / "config_sentence_transformers.json").read_text()).get("prompts") or {}
    except (OSError, ValueError, AttributeError):
        prompts = {}
    if not prompts:
        raise StartupError(f"`default-prompt-name` is set to `{name}` but no prompts were found in the "
                           "Sentence Transformers configuration")
    if name not in prompts:
        raise StartupError(f"`default-prompt-name` is set to `{name}` but it was not found in the Sentence "
                           f"Transformers prompts. Available prompts: [{', '.join(map(repr, prompts))}]")
    return str(prompts[name])


def startup(args: Args, env: Mapping[str, str], logger: Logger, knobs: Knobs) -> Engine:
    """Everything `text_embeddings_router::run` does before it touches a socket."""
    model_id = str(args.text("model_id"))
    local = Path(model_id)
    hub = not local.is_dir()
    root = download(args, env, logger, knobs.hub_fail) if hub else local
    try:
        model = load_model(args, root, hub, logger, knobs.model_type)
    except FileNotFoundError:
        panic("tokenizer.json not found. text-embeddings-inference only supports fast tokenizers: "
              'Os { code: 2, kind: NotFound, message: "No such file or directory" }', "router/src/lib.rs:150:62")
    max_input, max_tokens = model.max_input_length, int(args.number("max_batch_tokens") or 0)
    if max_input > max_tokens:
        if not args.flag("auto_truncate"):
            raise StartupError(f"The maximum input length is `{max_input}` which exceeds `--max-batch-tokens="
                               f"{max_tokens}`. Either increase `--max-batch-tokens` to at least `{max_input}`, or "
                               "set `--auto-truncate true` so that regardless the maximum input length, those are "
                               f"truncated to `{max_tokens}` tokens.")
        logger.log(WARN, *ROUTER, 227, f"The maximum input length is `{max_input}` which exceeds "
                   f"`--max-batch-tokens={max_tokens}`. Input sequences will be truncated to `{max_tokens}` "
                   "tokens, as `--auto-truncate` is either not provided (defaults to true) or provided as true. "
                   f"To avoid truncation, increase `--max-batch-tokens` to at least `{max_input}` and set "
                   "`--auto-truncate false`.")
        max_input = max_tokens
    logger.log(INFO, *ROUTER, 234, f"Maximum number of tokens per request: {max_input}")
    prompt = _prompt(args, root)
    workers = args.number("tokenization_workers") or min(max((os.cpu_count() or 2) - 1, 1), 64)
    logger.log(INFO, "text_embeddings_core::tokenization", "core/src/tokenization.rs", 38,
               f"Starting {workers} tokenization workers")
    logger.log(INFO, *ROUTER, 284, "Starting model backend")
    try:
        map_weights(root)
        start_workers(read_host_facts())
    except OSError as err:
        fatal("Could not start backend", f"Could not start Candle backend: {err}")
    time.sleep(knobs.load_s)
    if knobs.cuda_oom_gpus and env.get("CUDA_VISIBLE_DEVICES") in knobs.cuda_oom_gpus:
        fatal("Model backend is not healthy", 'DriverError(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")')
    if knobs.fail_start is not None:
        fatal("Model backend is not healthy", f"fake start failure (FAKE_TEI_FAIL_START={knobs.fail_start})",
              knobs.fail_start)
    logger.log(INFO, *ROUTER, 302, "Warming up model")
    labels = {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    info = Info(model_id, args.text("revision"), args.text("dtype") or "float32",
                args.text("served_model_name") or model_id,
                {"reranker": labels} if model.reranker else {"embedding": {"pooling": model.pooling}},
                int(args.number("max_concurrent_requests") or 0), max_input, max_tokens,
                args.number("max_batch_requests"), int(args.number("max_client_batch_size") or 0),
                args.flag("auto_truncate"), workers)
    return Engine(info, logger, knobs.request_delay_s, prompt, batch_s=knobs.batch_s, health_file=knobs.health_file,
                  prompts=_prompts(root))


def serve(args: Args, engine: Engine, logger: Logger, knobs: Knobs) -> FakeTeiServer:
    """Transient prometheus bind, then the main bind, then "Starting HTTP server" and "Ready"."""
    host = listen_host(str(args.text("hostname")), logger)
    port, prom_port = int(args.number("port") or 0), int(args.number("prometheus_port") or 0)
    try:
        bind_check(host, prom_port)
    except OSError as err:
        fatal("failed to build prometheus recorder",
              f"failed to create HTTP listener: {os.strerror(err.errno or 0)} (os error {err.errno})")
    settings = Settings(args.text("api_key"), int(args.number("payload_limit") or 0),
                        args.texts("cors_allow_origin"), knobs.die_mid_body)
    try:
        server = FakeTeiServer((host, port), engine, settings, ipv6=":" in host)
    except OSError as err:
        fatal(f"Could not bind TCP Listener on {socket_addr(host, port)}",
              f"{os.strerror(err.errno or 0)} (os error {err.errno})")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    logger.log(INFO, *SERVER, 1880, f"Starting HTTP server: {socket_addr(host, port)}")
    logger.log(INFO, *SERVER, 1881, "Ready")
    return server


def log_env(path: str, args: Args, env: Mapping[str, str]) -> None:
    """One JSON line per start: what this process was given (its GPU, its cores), appended in one write."""
    record = {"pid": os.getpid(), "port": int(args.number("port") or 0),
              "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"), "cpus": sorted(os.sched_getaffinity(0)),
              "tokenization_workers": args.number("tokenization_workers")}
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def spawn_grandchild(knobs: Knobs) -> subprocess.Popen:
    child = subprocess.Popen(["sleep", "600"])  # same process group, inherited stdio, like a backend helper
    if knobs.grandchild_pid_file:
        tmp = knobs.grandchild_pid_file + ".tmp"
        Path(tmp).write_text(f"{child.pid}\n")
        os.replace(tmp, knobs.grandchild_pid_file)
    return child


def spew(logger: Logger, total: int) -> None:
    line = logger.format(INFO, *SERVER, 1881, "fake spew " + "x" * 80) + "\n"
    count = -(-total // len(line.encode()))
    per_chunk = max(65536 // len(line), 1)
    while count > 0:
        logger.write(line * min(per_chunk, count))
        count -= per_chunk


def after_ready(logger: Logger, knobs: Knobs) -> None:
    if knobs.orphan_grandchild:  # tini's stage pattern: the intermediate shell exits, its child is orphaned
        subprocess.run(["sh", "-c", f"sleep {knobs.orphan_s} &"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if knobs.spew_bytes > 0:
        threading.Thread(target=spew, args=(logger, knobs.spew_bytes), daemon=True).start()


def wait_for_stop(signals: Signals, knobs: Knobs) -> None:
    deadline = None if knobs.exit_after_s is None else time.monotonic() + knobs.exit_after_s
    while not signals.stop.is_set():
        remaining = 1.0 if deadline is None else min(deadline - time.monotonic(), 1.0)
        if remaining <= 0:
            if knobs.exit_code > 0:
                os.write(2, f"Error: fake crash after ready (FAKE_TEI_EXIT_AFTER_S={knobs.exit_after_s})\n".encode())
            die(knobs.exit_code)
        signals.stop.wait(remaining)


def main_with(argv: Sequence[str], env: Mapping[str, str], knobs: Knobs) -> NoReturn:
    try:
        args = parse_args(argv, env)
    except ClapExit as done:
        os.write(1 if done.code == 0 else 2, done.text.encode())
        os._exit(done.code)
    signals = Signals(knobs)
    signals.install_default()
    logger = Logger(fd_sink(1), env, args.flag("json_output"), args.flag("disable_spans"))
    logger.log(INFO, *MAIN, 216, args_debug(args))
    if args.text("hf_api_token") is not None:
        logger.log(WARN, *MAIN, 235, "The `--hf-api-token` argument (and the `HF_API_TOKEN` env var) is deprecated "
                   "and will be removed in a future version. Please use `--hf-token` (or the `HF_TOKEN` env var) "
                   "instead.")
    if knobs.env_log:
        log_env(knobs.env_log, args, env)
    _grandchild = spawn_grandchild(knobs) if knobs.spawn_grandchild else None  # referenced: no early reaping
    try:
        engine = startup(args, env, logger, knobs)
    except StartupError as err:
        fatal(err.context, err.cause)
    server = serve(args, engine, logger, knobs)
    signals.install_ready()
    after_ready(logger, knobs)
    wait_for_stop(signals, knobs)
    logger.log(INFO, "text_embeddings_router::shutdown", "router/src/shutdown.rs", 27,
               "signal received, starting graceful shutdown")
    server.drain()
    time.sleep(knobs.slow_exit_s)
    os._exit(0)
