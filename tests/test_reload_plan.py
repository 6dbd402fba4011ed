"""The reload's diff (pure): each model unchanged, added, removed or replaced; restart-required refusals;
the vector-space guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from embed_launcher.config.settings import Settings, load_settings
from embed_launcher.supervision.placement import Slot
from embed_launcher.supervision.reload_plan import Action, diff

CWD = Path("/srv")
A = '[[models]]\nmodel = "org/a"\nalias = "a"\n'
A_REV = '[[models]]\nmodel = "org/a"\nalias = "a"\nrevision = "v2"\n'
A_REV_ALLOWED = A_REV + "allow_vector_change = true\n"
A_OTHER_ALLOWED = '[[models]]\nmodel = "org/a2"\nalias = "a"\nallow_vector_change = true\n'
A_OTHER = '[[models]]\nmodel = "org/a2"\nalias = "a"\n'
B = '[[models]]\nmodel = "org/b"\nalias = "b"\n'
A_TUNED = A + "max_batch_tokens = 4096\n"
A_PROMPTS = A + 'prompts = { search_query = "query" }\n'


def load(models: str, **env: str) -> Settings:
    environ = {"EMBED_MODELS_FILE": "models.toml", **env}
    return load_settings(environ, None, env_file=Path("/nonexistent.env"), cwd=CWD,
                         read_file=lambda path: models)


def actions(old: Settings, new: Settings) -> dict[str, str]:
    return {c.name: c.action.value for c in diff(old, new).changes}


@pytest.mark.parametrize(("before", "after", "expected"), [
    (A, A, {"embed": "unchanged"}),
    (A, A + B, {"embed": "unchanged", "embed-b": "added"}),
    (A + B, A, {"embed": "unchanged", "embed-b": "removed"}),
    (A, A_REV_ALLOWED, {"embed": "replaced"}),
    (A, A_TUNED, {"embed": "replaced"}),
    (A, A_OTHER_ALLOWED, {"embed": "replaced"}),
    (A, A_PROMPTS, {"embed": "unchanged"}),  # only the gateway reads prompts: no new TEI
])
def test_each_model_gets_one_action(before: str, after: str, expected: dict[str, str]) -> None:
    plan = diff(load(before), load(after))
    assert {c.name: c.action.value for c in plan.changes} == expected
    assert plan.refused == ()


def test_nothing_changed_is_nothing() -> None:
    plan = diff(load(A), load(A))
    assert plan.nothing and plan.summary() == "no model changed"


def test_gateway_only_changes_touch_no_tei() -> None:
    for old, new in ((load(A), load(A_PROMPTS)), (load(A), load(A, EMBED_GATEWAY_WAIT="5")),
                     (load(A), load(A, EMBED_METRICS_AUTH="true"))):
        plan = diff(old, new)
        assert plan.moved == () and plan.gateway_changed and not plan.nothing and plan.refused == ()


def test_more_replicas_replace_the_model() -> None:
    plan = diff(load(A), load(A), {"embed": (Slot(0),)}, {"embed": (Slot(0), Slot(1))})
    assert [c.action for c in plan.changes] == [Action.REPLACED]


@pytest.mark.parametrize(("variable", "value"), [
    ("EMBED_PORT", "9000"), ("EMBED_HOST", "127.0.0.1"), ("EMBED_GATEWAY_WORKERS", "2"),
    ("EMBED_DATA_DIR", "/elsewhere"), ("EMBED_API_KEY", "sk-new"),
    ("EMBED_LOG_FORMAT", "json"),  # every TEI's --json-output: a new process each
])
def test_port_bind_and_process_changes_are_refused_naming_the_variable(variable: str, value: str) -> None:
    plan = diff(load(A), load(A, **{variable: value}))
    assert plan.refused == (f"{variable} changed: restart required (a reload cannot change it)",)


def test_a_new_revision_behind_a_served_name_is_refused_without_allow_vector_change() -> None:
    (message,) = diff(load(A), load(A_REV)).refused
    assert "the model behind 'a' would change from org/a to org/a@v2" in message
    assert "allow_vector_change = true" in message


def test_a_new_model_behind_an_alias_is_refused_without_allow_vector_change() -> None:
    (message,) = diff(load(A), load(A_OTHER)).refused
    assert "from org/a to org/a2" in message


def test_a_new_model_under_a_new_name_is_no_vector_change() -> None:
    plan = diff(load(A), load(A + B))
    assert plan.refused == ()


def test_without_the_gateway_models_change_only_with_a_restart() -> None:
    plan = diff(load(A, EMBED_GATEWAY="false"), load(A_TUNED, EMBED_GATEWAY="false"))
    assert len(plan.refused) == 1 and "restart required" in plan.refused[0]


def test_allow_vector_change_must_be_a_boolean() -> None:
    from embed_launcher.config.modelsfile import parse_models_file

    _, problems = parse_models_file(A + 'allow_vector_change = "yes"\n', Path("/srv/models.toml"))
    assert problems == ["EMBED_MODELS_FILE /srv/models.toml: models[1].allow_vector_change must be true or false;"
                        " got 'yes'"]


def test_drain_timeout_is_a_setting() -> None:
    assert load(A).drain_timeout_s == 30.0
    assert load(A, EMBED_DRAIN_TIMEOUT="5").drain_timeout_s == 5.0
