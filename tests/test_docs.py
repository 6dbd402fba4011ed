"""The documents users read stay true to the code.

Generated parts (the variable table, the model catalogue, embed.env.example) equal what the code
renders; every variable the docs name exists, and every declared one is documented; the README is a
landing page whose links and anchors resolve; the fault table names tests that exist; and the
corrected facts of issue 17 stay corrected. `mkdocs build --strict` (run by .ci/lint, and below
where mkdocs is installed) checks the links and anchors of docs/.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from readme_quickstart import quick_start_commands

from embed_launcher.config.settings import VARIABLES, render_env_example
from embed_launcher.gateway.routes import TABLES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
DECLARED = {v.name for v in VARIABLES}
# Pages outside docs/ that users read (the landing page, the development and Kubernetes guides), then docs/.
GUIDES = [README, ROOT / "CONTRIBUTING.md", ROOT / "deploy" / "kubernetes" / "README.md"]
PAGES = [*GUIDES, *sorted((ROOT / "docs").rglob("*.md"))]
VARIABLE_NAME = re.compile(r"\b(?:EMBED|RERANK)_[A-Z0-9_]*[A-Z0-9]\b")


def _update_docs() -> Any:
    spec = importlib.util.spec_from_file_location("update_docs", ROOT / "scripts" / "update_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- generated parts ---------------------------------------------------------------------------------

def test_configuration_variable_table_is_generated_from_the_declarations() -> None:
    """docs/configuration.md's table equals what the declarations render (run scripts/update_docs.py)."""
    page = CONFIGURATION.read_text()
    assert "<!-- BEGIN VARIABLES" in page
    assert _update_docs().with_table(page) == page


def test_model_catalogue_table_is_generated_from_the_catalogue() -> None:
    """docs/models.md's recommended models are the catalogue --listmodels prints, sizes included."""
    page = (ROOT / "docs" / "models.md").read_text()
    assert _update_docs().with_catalogue(page) == page
    assert "| `BAAI/bge-m3` | 2.3 GB |" in page


def test_env_example_is_current() -> None:
    """embed.env.example is the rendered declarations."""
    assert (ROOT / "embed.env.example").read_text() == render_env_example()


# -- variables: documented ⇔ declared ------------------------------------------------------------------

def test_every_declared_variable_is_in_the_configuration_reference_and_the_example() -> None:
    """No variable goes undocumented."""
    page = CONFIGURATION.read_text()
    example = (ROOT / "embed.env.example").read_text()
    for variable in VARIABLES:
        assert f"| `{variable.name}` |" in page, variable.name
        assert variable.name in example, variable.name


def test_every_variable_in_the_configuration_table_is_declared() -> None:
    """The reverse: the reference's table lists no variable the launcher does not read."""
    table = CONFIGURATION.read_text().split("<!-- BEGIN VARIABLES", 1)[1].split("<!-- END VARIABLES", 1)[0]
    assert set(re.findall(r"^\| `([A-Z0-9_]+)` \|", table, re.M)) == DECLARED


def test_every_variable_a_page_names_exists_in_the_code() -> None:
    """A name in README, docs/, the guides is declared, or at least used by the code (e.g. EMBED_DEBUG)."""
    code = "\n".join(p.read_text() for d in ("embed_launcher", "tests", ".ci") for p in (ROOT / d).rglob("*")
                     if p.is_file() and p.suffix in (".py", "") and "__pycache__" not in p.parts)
    for page in PAGES:
        for name in set(VARIABLE_NAME.findall(page.read_text())):
            assert name in DECLARED or f'"{name}' in code or f"{name}=" in code, f"{page.name}: {name}"


def test_the_readme_names_ten_variables_that_exist() -> None:
    """"The ten variables people change" are ten, each declared and linked to the full reference."""
    readme = README.read_text()
    section = readme[readme.index("## The ten variables people change"):readme.index("## Deploying")]
    names = re.findall(r"^\| `([A-Z0-9_]+)` \|", section, re.M)
    assert len(names) == 10 and set(names) <= DECLARED
    assert "docs/configuration.md" in section


def test_compose_knobs_are_the_ones_documented() -> None:
    """Every ${KNOB} the compose files read is in the Docker page's knob table, and the reverse."""
    used = set()
    for name in ("docker-compose.yml", "docker-compose.gpu.yml"):
        used |= set(re.findall(r"\$\{([A-Z_]+):-", (ROOT / "docker" / name).read_text()))
    page = (ROOT / "docs" / "deployment" / "docker.md").read_text()
    table = page[page.index("| Knob |"):]
    table = table[:table.index("\n\n")]
    assert set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.M)) == used


# -- the README: a landing page whose quick start works with no edits ---------------------------------

def test_readme_is_a_landing_page_with_a_table_of_contents() -> None:
    """About 250 lines; every section is in the contents, and the contents link only real sections."""
    readme = README.read_text()
    assert len(readme.splitlines()) <= 260
    sections = re.findall(r"^## (.+)$", readme, re.M)
    contents = readme[readme.index("## Contents"):readme.index("\n## ", readme.index("## Contents") + 3)]
    listed = re.findall(r"^- \[(.+?)\]\(#([a-z0-9-]+)\)$", contents, re.M)
    assert [title for title, _ in listed] == [s for s in sections if s != "Contents"]
    for required in ("Prerequisites", "Quick start", "Calling it", "The ten variables people change",
                     "Deploying", "Common problems", "How this is tested"):
        assert required in sections
    assert sections.index("Prerequisites") < sections.index("Quick start")


def test_quick_start_ends_in_an_embedding_and_a_rerank_call() -> None:
    """The marked block: compose up, the key, one embedding call on 8000, one rerank call on 8001."""
    commands = quick_start_commands()
    assert commands[0] == "docker compose -f docker/docker-compose.yml up -d --build --wait"
    assert commands[1] == "export EMBED_API_KEY=$(docker exec embeddings embed_manage --getkey)"
    assert any("localhost:8000/v1/embeddings" in c for c in commands[2:])
    assert any("localhost:8001/rerank" in c for c in commands[2:])


def test_compose_serves_reranking_with_no_edit() -> None:
    """Issue 17: the quick start's rerank call needs RERANK_ENABLED and port 8001 from compose itself."""
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    service = compose["services"]["embeddings"]
    assert service["environment"]["RERANK_ENABLED"] == "${RERANK_ENABLED:-true}"
    assert "${HOST_RERANK_PORT:-8001}:8001/tcp" in service["ports"]
    assert service["build"]["args"]["TEI_TAG"] == "${TEI_TAG:-cpu-1.9.3}"
    assert service["image"] == "embed-launcher:${TEI_TAG:-cpu-1.9.3}"


def test_readme_gives_the_test_command_ci_runs() -> None:
    """CI runs exactly the README's test command."""
    readme = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -e '.[test]' && pytest" in readme
    assert ci.rstrip().endswith("pytest")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_outside_the_docs_site_resolve(page: Path) -> None:
    """Relative links of the pages mkdocs does not check lead to a file, and to an anchor it has."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.is_file(), f"{page.name}: {target}"
        if anchor:
            assert anchor in anchors(file), f"{page.name}: {target}"


# -- facts that were wrong (issue 17) ---------------------------------------------------------------------

def test_the_fault_table_names_tests_that_exist() -> None:
    """Every `tests/…py::name` a page cites is a test function in that file."""
    cited = 0
    for page in PAGES:
        for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", page.read_text()):
            cited += 1
            assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), f"{page.name}: {path}::{name}"
    assert cited >= 20


def test_the_reliability_page_is_linked_from_how_this_is_tested() -> None:
    """The fault table is a page of its own, one row per fault, linked from the README's testing section."""
    readme = README.read_text()
    start = readme.index("## How this is tested")
    assert "(docs/reliability.md)" in readme[start:readme.index("\n## ", start + 3)]
    header = "| Fault | What the client sees | What the operator sees | Test |"
    assert header in (ROOT / "docs" / "reliability.md").read_text()


def test_bare_metal_data_directory_is_the_installers() -> None:
    """The installer and the unit use /var/lib/embed-launcher; no page gives bare metal the container's path."""
    unit = (ROOT / "scripts" / "embed-launcher.service").read_text()
    installer = (ROOT / "scripts" / "install-systemd.sh").read_text()
    assert "EMBED_DATA_DIR=/var/lib/embed-launcher" in unit and "DATA_DIR=/var/lib/embed-launcher" in installer
    assert "`/var/lib/embed-launcher`" in (ROOT / "docs" / "deployment" / "bare-metal.md").read_text()
    row = "| bare metal, installed by `scripts/install-systemd.sh` | `/var/lib/embed-launcher` |"
    assert row in CONFIGURATION.read_text()
    for page in PAGES:
        assert "EMBED_DATA_DIR=/var/lib/embeddings embed_manage" not in page.read_text(), page.name


def test_docs_is_said_to_be_404_and_metrics_relayed_behind_the_gateway() -> None:
    """The gateway answers /metrics (every TEI's, labelled) on both ports and serves no /docs; the API page says so."""
    assert "/metrics" in TABLES["all"] and "/metrics" in TABLES["rerank"]
    assert "/docs" not in TABLES["all"] and "/docs" not in TABLES["rerank"]
    api = (ROOT / "docs" / "api.md").read_text()
    assert "| `GET /docs` (Swagger UI) | yes: TEI's own | **404**" in api
    assert ("| `GET /metrics` (Prometheus, public) | yes: TEI's own, unlabelled; the labelled families on"
            " `EMBED_PROMETHEUS_PORT` | yes: every TEI's, labelled") in api


def test_no_page_claims_what_ci_does_not_run() -> None:
    """CI runs podman, not Docker; cuda-1.9.3 is not every GPU; the layer table has the gateway."""
    for page in PAGES:
        text = page.read_text()
        assert "both tested" not in text and "Any supported NVIDIA GPU" not in text, page.name
        assert "kubectl patch hpa" not in text, page.name  # always with -n <namespace>
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    assert "| `gateway/`" in contributing


# -- the site ---------------------------------------------------------------------------------------------

def test_mkdocs_build_is_strict_and_clean(tmp_path: Path) -> None:
    """`mkdocs build --strict`: every link and anchor of docs/ resolves (as .ci/lint checks)."""
    pytest.importorskip("mkdocs", reason="pip install -r requirements-docs.txt (CI's lint installs it)")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                            env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
