"""The error funnel's vocabulary: exceptions that carry a user-facing message and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


class LauncherError(Exception):
    """A failure the user can act on: one message (possibly several lines), one exit code.

    Raised anywhere; caught once at the CLI boundary, which prints ``message`` and exits
    with ``exit_code``. Nothing that raises this should need a traceback to be understood.
    """

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(LauncherError):
    """Bad configuration: every problem found, reported at once; exit 2."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        body = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"Error: invalid configuration ({len(self.problems)} {noun}):\n{body}")
