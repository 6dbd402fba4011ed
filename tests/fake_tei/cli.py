"""Command line of the TEI stand-in: text-embeddings-router 1.9.3's clap 4.5 parser, errors and help."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fake_tei.args import (
    APPEND,
    BIN,
    BOOL_VALUES,
    BY_LONG,
    CONFLICTS,
    ENUM,
    ENUMS,
    FLAG,
    OPT_BOOL,
    OPTS,
    U16,
    USIZE,
    VERSION,
    Args,
    Opt,
)


class ClapExit(Exception):
    """Parsing stopped: `text` goes to stderr with exit 2, or to stdout with exit 0 (help, version)."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.text, self.code = text, code


def _usage(used: Sequence[Opt]) -> str:
    if not used:
        return f"Usage: {BIN} [OPTIONS] --model-id <MODEL_ID>"
    shown = dict.fromkeys(["--model-id <MODEL_ID>"] + [str(o) for o in used if not o.hidden])
    return f"Usage: {BIN} " + " ".join(shown)


def _fail(message: str, usage: str | None = None) -> ClapExit:
    text = "error: " + message + (f"\n\n{usage}" if usage else "")
    return ClapExit(text + "\n\nFor more information, try '--help'.\n", 2)


def jaro(a: str, b: str) -> float:
    """strsim::jaro, which clap uses for its "a similar argument exists" tips."""
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    reach = max(max(len(a), len(b)) // 2 - 1, 0)
    b_used = [False] * len(b)
    a_hits: list[str] = []
    for i, ch in enumerate(a):
        for j in range(max(0, i - reach), min(len(b), i + reach + 1)):
            if not b_used[j] and b[j] == ch:
                b_used[j] = True
                a_hits.append(ch)
                break
    m = len(a_hits)
    if m == 0:
        return 0.0
    b_hits = [ch for ch, used in zip(b, b_used, strict=True) if used]
    half_transpositions = sum(x != y for x, y in zip(a_hits, b_hits, strict=True)) // 2
    return (m / len(a) + m / len(b) + (m - half_transpositions) / m) / 3


def did_you_mean(value: str, candidates: Sequence[str]) -> str | None:
    """The most similar candidate above clap's 0.7 threshold (ties go to the later one)."""
    best: tuple[float, str] | None = None
    for cand in candidates:
        score = jaro(value, cand)
        if score > 0.7 and (best is None or score >= best[0]):
            best = (score, cand)
    return best[1] if best else None


def _invalid_value(opt: Opt, value: str, possible: Sequence[str]) -> ClapExit:
    if value:
        msg = f"invalid value '{value}' for '{opt}'"
    else:
        msg = f"a value is required for '{opt}' but none was supplied"
    if possible:
        msg += "\n  [possible values: " + ", ".join(possible) + "]"
    tip = did_you_mean(value, possible) if value else None
    if tip:
        msg += f"\n\n  tip: a similar value exists: '{tip}'"
    return _fail(msg)


def _rust_uint(text: str, bits_max: int, signed: bool) -> int:
    """Rust's integer FromStr: optional sign, ASCII digits only; raises ValueError with Rust's text."""
    if text == "":
        raise ValueError("cannot parse integer from empty string")
    sign, digits = 1, text
    if text[0] in "+-" and len(text) > 1 and (text[0] == "+" or signed):
        sign, digits = (-1 if text[0] == "-" else 1), text[1:]
    if not digits.isascii() or not digits.isdigit():
        raise ValueError("invalid digit found in string")
    value = sign * int(digits)
    if value > bits_max:
        raise ValueError("number too large to fit in target type")
    if value < -bits_max - 1:
        raise ValueError("number too small to fit in target type")
    return value


def parse_value(opt: Opt, raw: str) -> object:
    """Convert one raw value the way clap's value parser for the field's Rust type does."""
    try:
        if opt.kind == USIZE:
            return _rust_uint(raw, 2**64 - 1, signed=False)
        if opt.kind == U16:
            value = _rust_uint(raw, 2**63 - 1, signed=True)  # clap parses u16 as i64 and range-checks
            if not 0 <= value <= 65535:
                raise ValueError(f"{value} is not in 0..=65535")
            return value
    except ValueError as err:
        raise _fail(f"invalid value '{raw}' for '{opt}': {err}") from None
    if opt.kind in (FLAG, OPT_BOOL):
        if raw not in BOOL_VALUES:
            raise _invalid_value(opt, raw, BOOL_VALUES)
        return raw == "true"
    if opt.kind == ENUM:
        names = [n for n, _ in ENUMS[opt.name]]
        if raw not in names:
            raise _invalid_value(opt, raw, names)
    return raw


class _Parser:
    """clap's Parser for this one command: CLI first, then env for absent args, then defaults, then checks."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.matched: dict[str, list[object]] = {}  # insertion order = clap's matcher order
        self.explicit: list[Opt] = []
        self.pending: tuple[Opt, list[str]] | None = None

    def react(self, opt: Opt, raw: list[str], from_cli: bool) -> None:
        self.resolve_pending()
        if from_cli and not raw and opt.kind not in (FLAG, OPT_BOOL):
            possible = [n for n, _ in ENUMS.get(opt.name, ())]
            raise _invalid_value(opt, "", possible)
        if not raw and opt.kind in (FLAG, OPT_BOOL):
            raw = ["true"]
        if opt.name in self.matched and opt.kind != APPEND:
            raise _fail(f"the argument '{opt}' cannot be used multiple times", _usage([]))
        values = [parse_value(opt, v) for v in raw]
        if opt.name not in self.matched:
            self.explicit.append(opt)
        self.matched.setdefault(opt.name, []).extend(values)

    def resolve_pending(self) -> None:
        if self.pending is not None:
            opt, raw = self.pending
            self.pending = None
            self.react(opt, raw, from_cli=True)

    def unknown(self, shown: str, smart_usage: bool = False, suggestion: Opt | None = None) -> ClapExit:
        try:
            self.resolve_pending()
        except ClapExit:
            pass
        used = [o for o in self.explicit if not o.hidden] + ([suggestion] if suggestion else [])
        used = used if smart_usage else []
        msg = f"unexpected argument '{shown}' found"
        if suggestion:
            msg += f"\n\n  tip: a similar argument exists: '{suggestion.long}'"
        return _fail(msg, _usage(used))

    def long(self, token: str) -> None:
        name, eq, attached = token[2:].partition("=")
        if name in ("help", "version") and not eq:
            self.resolve_pending()
            raise ClapExit(help_text(long=True) if name == "help" else f"{BIN} {VERSION}\n", 0)
        opt = BY_LONG.get(name)
        if opt is None:
            hit = did_you_mean(name, list(BY_LONG) + ["help", "version"])
            raise self.unknown(f"--{name}", smart_usage=True, suggestion=BY_LONG.get(hit or ""))
        if opt.kind == FLAG and eq:
            try:
                self.resolve_pending()
            except ClapExit:
                pass
            used = [o for o in self.explicit if not o.hidden and o.name != "model_id"] + [opt]
            raise _fail(f"unexpected value '{attached}' for '{opt}' found; no more were expected", _usage(used))
        if opt.kind == FLAG:
            self.react(opt, [], from_cli=True)
        elif eq:
            self.react(opt, [attached], from_cli=True)
        else:
            self.resolve_pending()
            self.pending = (opt, [])

    def short(self, token: str) -> None:
        """Handle `-p80`, `-p 80`, `-p=80`, `-h` and `-V`."""
        for i, ch in enumerate(token[1:], start=1):
            if ch in "hV":
                self.resolve_pending()
                raise ClapExit(help_text(long=False) if ch == "h" else f"{BIN} {VERSION}\n", 0)
            if ch != "p":
                raise self.unknown(f"-{ch}")
            rest = token[i + 1:]
            rest = rest[1:] if rest.startswith("=") else rest
            if rest:
                self.react(BY_LONG["port"], [rest], from_cli=True)
            else:
                self.resolve_pending()
                self.pending = (BY_LONG["port"], [])
            return

    def parse_cli(self, argv: Sequence[str]) -> None:
        trailing = False
        for token in argv:
            wants_value = self.pending is not None and not self.pending[1]
            if trailing:
                raise self.unknown(token)
            if token == "--":
                trailing = True
            elif token.startswith("--"):
                self.long(token)
            elif token.startswith("-") and token != "-":
                self.short(token)
            elif wants_value and self.pending is not None:
                self.pending[1].append(token)
            else:
                raise self.unknown(token)
        self.resolve_pending()

    def apply_env(self) -> None:
        for opt in OPTS:
            if opt.name not in self.matched and opt.env in self.environ:
                self.react(opt, [self.environ[opt.env]], from_cli=False)

    def validate(self) -> None:
        names = [o.name for o in self.explicit]
        for opt in self.explicit:
            others = [n for n in names if CONFLICTS.get(opt.name) == n or CONFLICTS.get(n) == opt.name]
            if others:
                other = BY_LONG[others[0].replace("_", "-")]
                used = [o for o in self.explicit if o.name not in others]
                raise _fail(f"the argument '{opt}' cannot be used with '{other}'", _usage(used))
        if "model_id" not in self.matched:
            used = [o for o in self.explicit if not o.hidden] + [OPTS[0]]
            raise _fail("the following required arguments were not provided:\n  --model-id <MODEL_ID>",
                        _usage(used))


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> Args:
    """Parse like TEI's `Args::parse()`; raises ClapExit for help, version and every clap error."""
    parser = _Parser(environ)
    parser.parse_cli(argv)
    parser.apply_env()
    parser.validate()
    args = Args()
    for opt in OPTS:
        values = parser.matched.get(opt.name)
        if values is None:
            args[opt.name] = opt.default
        elif opt.kind == APPEND:
            args[opt.name] = list(values)
        else:
            args[opt.name] = values[-1]
    return args


def help_text(long: bool) -> str:
    """A clap-style help page (abridged descriptions; layout, env names and defaults as clap prints them)."""
    lines = ["Text Embedding Webserver", "", f"Usage: {BIN} [OPTIONS] --model-id <MODEL_ID>", "", "Options:"]
    entries = [o for o in OPTS if not o.hidden]
    for opt in entries:
        flag = ("  -p, " if opt.name == "port" else "      ") + str(opt)
        notes = [f"env: {opt.env}="]
        if opt.default is not None:
            notes.append(f"default: {str(opt.default).lower() if isinstance(opt.default, bool) else opt.default}")
        if opt.kind == ENUM:
            notes.append("possible values: " + ", ".join(n for n, _ in ENUMS[opt.name]))
        lines += [flag, f"          {opt.help}", "", "          [" + "] [".join(notes) + "]", ""] if long else [
            f"{flag}  {opt.help} [" + "] [".join(notes) + "]"]
    lines += ["  -h, --help", "          Print help" + (" (see a summary with '-h')" if long else ""), "",
              "  -V, --version", "          Print version"] if long else [
        "  -h, --help  Print help (see more with '--help')", "  -V, --version  Print version"]
    return "\n".join(lines) + "\n"
