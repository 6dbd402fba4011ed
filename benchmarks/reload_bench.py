"""A reload under load, measured with the TEI and Hub stand-ins on 127.0.0.1 (issue 21).

    .venv/bin/python benchmarks/reload_bench.py [--reps 3] [--load-s 0.3]

Starts `python -m embed_launcher` with one model (A, alias `a`) behind the gateway, keeps two client
threads sending `/v1/embeddings` for A back to back, then repeats: add model B (`embed_manage --reload`),
switch A's revision (allowed by `allow_vector_change`), remove B. It measures the requests for A that
failed during the reloads (target 0) and the time from `--reload` until B answers (target: the
stand-in's model load time + at most 1 s; B's download happens once, in a warm-up cycle, not measured).
Prints a Markdown table. No internet access.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import live_client  # noqa: E402
from conftest import free_port, make_tei  # noqa: E402
from fake_hub.server import HubStandIn  # noqa: E402
from live_client import Load  # noqa: E402
from table import print_table  # noqa: E402  (this folder: the script's own)

KEY = "bench-key"
A = '[[models]]\nmodel = "BAAI/bge-small-en-v1.5"\nalias = "a"\n'
A_MAIN = A + 'revision = "main"\nallow_vector_change = true\n'
A_BACK = A + "allow_vector_change = true\n"  # back to no revision: a change of revision too
B = '[[models]]\nmodel = "BAAI/bge-m3"\nalias = "b"\n'


def embed(port: int, model: str) -> int:
    return live_client.embed(port, model, ["hello"], key=KEY)


def manage_reload(env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "embed_launcher.manage", "--reload", "--timeout", "120"],
                            env=env, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise SystemExit(f"embed_manage --reload failed: {result.stdout}{result.stderr}")


def until(predicate: object, timeout_s: float = 60.0) -> float:
    """Poll ``predicate`` every 5 ms; the time it first held (time.monotonic)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.005)
    raise SystemExit(f"timed out after {timeout_s} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--load-s", type=float, default=0.3, help="the TEI stand-in's model load time")
    args = parser.parse_args()
    with HubStandIn().start() as hub, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "bin").mkdir()
        models = tmp / "models.toml"
        models.write_text(A)
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", os.defpath), "EMBED_DATA_DIR": str(tmp / "data"),
            "EMBED_ENV_FILE": str(tmp / "absent.env"), "EMBED_TEI_BIN": str(make_tei(tmp / "bin", load_s=args.load_s)),
            "EMBED_HOST": "127.0.0.1", "EMBED_SERVER_ADDR": "127.0.0.1", "EMBED_DATA_PERSISTENT": "true",
            "HF_ENDPOINT": hub.endpoint, "EMBED_API_KEY": KEY, "EMBED_PORT": str(port),
            "EMBED_PROMETHEUS_PORT": str(free_port()), "EMBED_MODELS_FILE": str(models), "EMBED_DRAIN_TIMEOUT": "5",
        }  # fmt: skip
        log = open(tmp / "launcher.log", "wb")  # noqa: SIM115 - the launcher writes it until it stops
        proc = subprocess.Popen([sys.executable, "-m", "embed_launcher"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            until(lambda: embed(port, "a") == 200)
            for text in (A + B, A):  # warm-up: B's download, not measured
                models.write_text(text)
                manage_reload(env)
            load = Load(lambda: embed(port, "a")).start()  # two clients for A, back to back
            add_s: list[float] = []
            switch_s: list[float] = []
            remove_s: list[float] = []
            for rep in range(args.reps):
                before, revision = (A_BACK, A_MAIN) if rep % 2 == 0 else (A_MAIN, A_BACK)  # each rep switches A
                models.write_text(before + B)
                started = time.monotonic()
                done = threading.Thread(target=manage_reload, args=(env,))
                done.start()
                add_s.append(until(lambda: embed(port, "b") == 200) - started)
                done.join()
                for text, samples in (((revision + B), switch_s), (revision, remove_s)):
                    models.write_text(text)
                    started = time.monotonic()
                    manage_reload(env)
                    samples.append(time.monotonic() - started)
            load.close()
        except BaseException:
            lines = (tmp / "launcher.log").read_text(errors="replace").splitlines()
            print("\n".join(x for x in lines if " INFO " not in x)[-3000:], file=sys.stderr)
            raise
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()
    over = [s - args.load_s for s in add_s]
    rows = [
        ("requests for A failed during the reloads", "0", f"{len(load.failed)} of {len(load.answers)}",
         "yes" if not load.failed else "**no**"),
        ("`--reload` → B answers (add B)", f"≤ {args.load_s:g} s load + 1 s",
         f"{statistics.median(add_s):.3f} s (worst {max(add_s):.3f} s)", "yes" if max(over) <= 1.0 else "**no**"),
        ("… of which over the stand-in's load time", "≤ 1 s", f"{statistics.median(over):.3f} s", ""),
        ("`--reload` returns (switch A's revision, old TEI drained)", "—",
         f"{statistics.median(switch_s):.3f} s (worst {max(switch_s):.3f} s)", ""),
        ("`--reload` returns (remove B)", "—", f"{statistics.median(remove_s):.3f} s", ""),
    ]
    print_table(f"Reload under load ({args.reps} reps, stand-in load {args.load_s:g} s)",
                ("measure", "target", "measured", "met"), rows)


if __name__ == "__main__":
    main()
