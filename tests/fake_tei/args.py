"""TEI's `Args` struct for the stand-in: fields in declaration order, typed values, veil-redacted Debug."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

BIN = "text-embeddings-router"
VERSION = "1.9.3"
STR, USIZE, U16, FLAG, OPT_BOOL, ENUM, APPEND = "str", "usize", "u16", "flag", "opt_bool", "enum", "append"
BOOL_VALUES = ("true", "false")
ENUMS = {
    "dtype": (("float16", "Float16"), ("float32", "Float32")),
    "pooling": (("cls", "Cls"), ("mean", "Mean"), ("splade", "Splade"), ("last-token", "LastToken")),
}


@dataclass(frozen=True)
class Opt:
    """One field of TEI's `Args` struct, in declaration order."""

    name: str
    kind: str
    default: object = None
    help: str = ""
    hidden: bool = False
    redact: bool = False

    @property
    def long(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return self.name.upper()

    def __str__(self) -> str:  # clap's Display of an Arg, used in errors and usage
        if self.kind == FLAG:
            return self.long
        if self.kind == OPT_BOOL:
            return f"{self.long} [<{self.env}>]"
        return f"{self.long} <{self.env}>"


OPTS: tuple[Opt, ...] = (
    Opt("model_id", STR, help="The Hugging Face model ID, or a path to a local directory", redact=True),
    Opt("revision", STR, help="The actual revision of the model if you're referring to a model on the hub"),
    Opt("tokenization_workers", USIZE, help="Optionally control the number of tokenizer workers"),
    Opt("dtype", ENUM, help="The dtype to be forced upon the model"),
    Opt("served_model_name", STR, help="The name of the model that is being served"),
    Opt("pooling", ENUM, help="Optionally control the pooling method for embedding models"),
    Opt("max_concurrent_requests", USIZE, 512, "The maximum amount of concurrent requests"),
    Opt("max_batch_tokens", USIZE, 16384, "The total amount of potential tokens within a batch"),
    Opt("max_batch_requests", USIZE, help="Optionally control the maximum number of individual requests in a batch"),
    Opt("max_client_batch_size", USIZE, 32, "Control the maximum number of inputs that a client can send"),
    Opt("auto_truncate", OPT_BOOL, True, "Control automatic truncation of inputs"),
    Opt("default_prompt_name", STR, help="The name of the prompt that should be used by default for encoding"),
    Opt("default_prompt", STR, help="The prompt that should be used by default for encoding"),
    Opt("dense_path", STR, help="Optionally, define the path to the Dense module"),
    Opt("hf_api_token", STR, help="[DEPRECATED IN FAVOR OF `--hf-token`]", hidden=True, redact=True),
    Opt("hf_token", STR, help="Your Hugging Face Hub token", redact=True),
    Opt("hostname", STR, "0.0.0.0", "The IP address to listen on"),
    Opt("port", U16, 3000, "The port to listen on"),
    Opt("uds_path", STR, "/tmp/text-embeddings-inference-server", "The name of the unix socket backends use"),
    Opt("huggingface_hub_cache", STR, help="The location of the huggingface hub cache"),
    Opt("payload_limit", USIZE, 2000000, "Payload size limit in bytes"),
    Opt("api_key", STR, help="Set an api key for request authorization"),
    Opt("json_output", FLAG, False, "Outputs the logs in JSON format (useful for telemetry)"),
    Opt("disable_spans", FLAG, False, "Whether or not to include the log trace through spans"),
    Opt("otlp_endpoint", STR, help="The grpc endpoint for opentelemetry"),
    Opt("otlp_service_name", STR, "text-embeddings-inference.server", "The service name for opentelemetry"),
    Opt("prometheus_port", U16, 9000, "The Prometheus port to listen on"),
    Opt("cors_allow_origin", APPEND, help="Unused for gRPC servers"),
)
BY_LONG = {o.long[2:]: o for o in OPTS}
CONFLICTS = {"default_prompt_name": "default_prompt", "default_prompt": "default_prompt_name",
             "hf_token": "hf_api_token"}


class Args(dict[str, object]):
    """Parsed values by field name (TEI's `Args`), with typed accessors."""

    def text(self, name: str) -> str | None:
        value = self[name]
        return None if value is None else str(value)

    def number(self, name: str) -> int | None:
        value = self[name]
        return value if isinstance(value, int) else None

    def flag(self, name: str) -> bool:
        return self[name] is True

    def texts(self, name: str) -> list[str] | None:
        value = self[name]
        return [str(v) for v in value] if isinstance(value, list) else None


def rust_debug_str(text: str) -> str:
    """Rust's `{:?}` of a str: double quotes, escapes for quotes, backslashes and non-printables."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\r\t\0":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}[ch])
        elif not ch.isprintable():
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return "".join(out) + '"'


def veil_partial(text: str) -> str:
    """veil 0.1.7 `#[redact(partial)]`: mask alphanumerics, exposing min(n/3, 3) at each end when n >= 5."""
    count = sum(ch.isalnum() for ch in text)
    expose = min(count // 3, 3) if count >= 5 else 0
    middle = count - 2 * expose
    out = []
    for ch in text:
        if not ch.isalnum():
            out.append(ch)
        elif expose > 0:
            expose -= 1
            out.append(ch)
        elif middle > 0:
            middle -= 1
            out.append("*")
        else:
            out.append(ch)
    return "".join(out)


def _debug_value(opt: Opt, value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, int):
        shown = str(value)
    elif opt.kind == ENUM:
        shown = dict(ENUMS[opt.name])[str(value)]
    elif isinstance(value, list):
        shown = "[" + ", ".join(rust_debug_str(v) for v in value) + "]"
    else:
        shown = rust_debug_str(str(value))
    optional = opt.default is None and opt.name != "model_id"
    if opt.redact:
        shown = veil_partial(shown)
    return f"Some({shown})" if optional else shown


def args_debug(args: Mapping[str, object]) -> str:
    """The `Args { … }` line TEI logs first: field order kept, tokens and model id partly redacted."""
    return "Args { " + ", ".join(f"{o.name}: {_debug_value(o, args[o.name])}" for o in OPTS) + " }"
