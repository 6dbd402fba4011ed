#!/usr/bin/env python3
"""Stand-in for Hugging Face TEI `text-embeddings-router` 1.9.3 (stdlib only) used by the integration tests.

It follows /work/shared/tei-contract.md: the same flags and env twins (clap rules, exit 2 on parse
errors, `--help`, `--version`), the same log lines on stdout (text with ANSI unless NO_COLOR is non-empty,
or `--json-output`), the `Args { … }` line with veil redaction and the api key in clear, the same
startup order (model files, load, transient prometheus bind, main bind, "Ready"), the same `Error:` /
`Caused by:` texts and exit codes, the same signal behaviour (default actions before Ready, graceful
drain and exit 0 after), and the same HTTP API (auth, routes, error bodies, response shapes) with
deterministic fake vectors (384 dims, hash-seeded) and word-overlap rerank scores.

Model source: an existing directory is a local model (needs config.json, else exit 1; needs
tokenizer.json, else a panic and SIGABRT). Anything else is a Hub id looked up in
`--huggingface-hub-cache` (else `$HF_HOME/hub`, else ~/.cache/huggingface/hub) as
`models--org--name/snapshots/*/`; when absent a minimal snapshot (refs/<revision>, config.json,
tokenizer.json, sentence_bert_config.json, 1_Pooling/config.json) is written there, as a download would.
Reranker when config.json `architectures` has a `…ForSequenceClassification` entry, or the Hub id
contains "rerank" or "cross-encoder"; embedding model otherwise.

Fault knobs (environment variables read only by the fake; everything else is TEI's own interface):
  FAKE_TEI_LOAD_S=<s>            simulated model load before any socket is bound (default 0.2)
  FAKE_TEI_FAIL_START=<code>     after the load, print `Error: Model backend is not healthy` and exit
                                 with <code> instead of becoming ready (negative: die by signal -code)
  FAKE_TEI_EXIT_AFTER_S=<s>      exit <s> seconds after "Ready" ...
  FAKE_TEI_EXIT_CODE=<code>      ... with this code (default 1; negative: die by signal -code)
  FAKE_TEI_HEALTH_FILE=<path>    after Ready, /health answers 503 while <path> exists and contains "503"
  FAKE_TEI_IGNORE_TERM=1         after Ready, SIGTERM and SIGINT are ignored entirely
  FAKE_TEI_SLOW_EXIT_S=<s>       a graceful shutdown takes <s> more seconds after the drain
  FAKE_TEI_REQUEST_DELAY_S=<s>   each inference request takes <s> seconds (permits held: 429s, drains)
  FAKE_TEI_SPAWN_GRANDCHILD=1    at start, spawn `sleep 600` in our process group ...
  FAKE_TEI_GRANDCHILD_PID_FILE=<path>  ... and write its pid there (atomically)
  FAKE_TEI_ORPHAN_GRANDCHILD=1   after Ready, `sh -c 'sleep S &'`: the sleep is orphaned and reparented
  FAKE_TEI_ORPHAN_S=<s>          lifetime of that orphan (default 0.5)
  FAKE_TEI_SPEW_BYTES=<n>        after Ready, write <n> bytes of log lines to stdout as fast as possible
  FAKE_TEI_SIGNAL_LOG=<path>     append the name of every received signal (TERM, INT, HUP, QUIT, USR1,
                                 USR2), one per line; the default action still follows where TEI has one
  FAKE_TEI_HUB_FAIL=1            a Hub id not in the cache fails: `Could not download model artifacts`
  FAKE_TEI_MODEL_TYPE=embedding|reranker  override the detected model type

Invoke: `python3 tests/fake_tei.py --model-id DIR_OR_ID --port N --prometheus-port M ...`; wrapped for
the launcher as `#!/bin/sh` + `FAKE_TEI_LOAD_S=0.1 exec /path/python /path/tests/fake_tei.py "$@"`.
"""

from __future__ import annotations

import os
import signal
import sys

from fake_tei_boot import Knobs, fatal, main_with

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python's KeyboardInterrupt handler is not TEI's
    try:
        main_with(sys.argv[1:], dict(os.environ), Knobs.from_env(os.environ))
    except SystemExit:
        raise
    except BaseException as exc:  # a bug in the fake must still look like a TEI failure, not hang
        fatal("Fake TEI internal error", f"{type(exc).__name__}: {exc}")
