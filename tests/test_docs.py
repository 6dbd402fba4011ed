"""The documents users read stay in sync with the code: README's variable table and embed.env.example."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from embed_launcher.config.settings import VARIABLES, render_env_example

ROOT = Path(__file__).resolve().parent.parent


def _update_docs() -> Any:
    spec = importlib.util.spec_from_file_location("update_docs", ROOT / "scripts" / "update_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_variable_table_is_generated_from_the_declarations() -> None:
    """README's table equals what the declarations render (run scripts/update_docs.py after a change)."""
    readme = (ROOT / "README.md").read_text()
    assert _update_docs().with_table(readme) == readme


def test_every_variable_is_in_the_readme_and_the_example() -> None:
    """No variable goes undocumented."""
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "embed.env.example").read_text()
    for variable in VARIABLES:
        assert f"`{variable.name}`" in readme
        assert variable.name in example


def test_env_example_is_current() -> None:
    """embed.env.example is the rendered declarations."""
    assert (ROOT / "embed.env.example").read_text() == render_env_example()


def test_readme_gives_the_test_command_ci_runs() -> None:
    """CI runs exactly the README's test command."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -e '.[test]' && pytest" in readme
    assert ci.rstrip().endswith("pytest")
