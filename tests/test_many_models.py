"""Many models: comma lists, the models file, default models, child names, and when the gateway is on."""

from __future__ import annotations

from pathlib import Path

import pytest

from embed_launcher.config.settings import Settings, load_settings
from embed_launcher.reporting.errors import ConfigError

CWD = Path("/srv")
MODELS_FILE = CWD / "models.toml"


def load(env: dict[str, str] | None = None, models: str | None = None) -> Settings:
    """Load with an optional models file (served from memory, as /srv/models.toml)."""
    env = dict(env or {})
    files = {MODELS_FILE: models} if models is not None else {}
    if models is not None:
        env.setdefault("EMBED_MODELS_FILE", "models.toml")

    def read(path: Path) -> str:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory")
        return files[path]

    return load_settings(env, None, env_file=Path("/nonexistent.env"), cwd=CWD, read_file=read)


def problems(env: dict[str, str] | None = None, models: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(env, models)
    return info.value.problems


def summary(settings: Settings) -> list[tuple[str, str, str, bool, int]]:
    """(child name, kind, model, default, public port) for each service."""
    return [(s.name, s.kind, s.model, s.default, s.port) for s in settings.services]


def test_one_model_of_each_kind_is_exactly_today() -> None:
    """No list, no file: the two services of old, on their ports, behind the gateway (issue 18); TEI direct
    with EMBED_GATEWAY=false."""
    settings = load({"RERANK_ENABLED": "true"})
    assert summary(settings) == [
        ("embed", "embed", "BAAI/bge-small-en-v1.5", True, 8000),
        ("rerank", "rerank", "BAAI/bge-reranker-v2-m3", True, 8001),
    ]
    assert settings.extra == () and settings.gateway is True
    assert load({"RERANK_ENABLED": "true", "EMBED_GATEWAY": "false"}).gateway is False


def test_a_comma_list_serves_several_models_behind_the_gateway() -> None:
    """The first is the default (and keeps the name "embed"); the others get names of their own."""
    settings = load({"EMBED_MODEL": "BAAI/bge-small-en-v1.5, BAAI/bge-m3,intfloat/e5-small-v2"})
    assert summary(settings) == [
        ("embed", "embed", "BAAI/bge-small-en-v1.5", True, 8000),
        ("embed-bge-m3", "embed", "BAAI/bge-m3", False, 8000),
        ("embed-e5-small-v2", "embed", "intfloat/e5-small-v2", False, 8000),
    ]
    assert settings.gateway is True
    assert settings.extra[0].label == "Embeddings (BAAI/bge-m3)" and settings.embed.label == "Embeddings"


def test_per_service_variables_apply_to_the_default_model_only() -> None:
    """EMBED_REVISION, EMBED_SERVED_MODEL_NAME and tuning go to the default; others keep declared defaults."""
    settings = load({
        "EMBED_MODEL": "BAAI/bge-small-en-v1.5,BAAI/bge-m3", "EMBED_REVISION": "v2",
        "EMBED_SERVED_MODEL_NAME": "small", "EMBED_MAX_BATCH_TOKENS": "8192",
    })  # fmt: skip
    default, other = settings.embed, settings.extra[0]
    assert (default.revision, default.served_name, default.tei_arg("--max-batch-tokens")) == ("v2", "small", "8192")
    assert (other.revision, other.served_model_name, other.tei_arg("--max-batch-tokens")) == (None, None, None)
    assert other.tei_arg("--max-client-batch-size") == "512"  # the launcher's own default still applies


MODELS_TOML = """
[[models]]
model = "BAAI/bge-m3"
alias = "m3"
max_batch_tokens = 4096
dtype = "float16"
prompts = { search_query = "query", search_document = "passage" }
matryoshka_dimensions = [1024, 512]

[[models]]
model = "naver/splade-cocondenser-ensembledistil"
kind = "sparse"

[[models]]
model = "BAAI/bge-reranker-base"
kind = "rerank"
alias = "reranker"
revision = "refs/pr/1"
"""


def test_the_models_file_declares_models_with_settings_of_their_own() -> None:
    """Without EMBED_MODEL, the file's models replace the built-in default; a reranker in it enables reranking."""
    settings = load(models=MODELS_TOML)
    assert summary(settings) == [
        ("embed", "embed", "BAAI/bge-m3", True, 8000),
        ("rerank", "rerank", "BAAI/bge-reranker-base", True, 8001),
        ("sparse", "sparse", "naver/splade-cocondenser-ensembledistil", True, 8000),
    ]
    embed, rerank, sparse = settings.services
    assert embed.served_name == "m3" and embed.tei_arg("--dtype") == "float16"
    assert embed.tei_arg("--max-batch-tokens") == "4096"
    assert rerank.served_name == "reranker" and rerank.revision == "refs/pr/1"
    assert sparse.tei_arg("--pooling") == "splade"  # TEI serves /embed_sparse only with SPLADE pooling
    assert settings.gateway is True  # dense and sparse share EMBED_PORT


def test_the_models_file_gives_the_gateway_prompts_and_matryoshka_sizes() -> None:
    """`prompts` (Cohere's input_type → the model's prompt) and `matryoshka_dimensions` reach the gateway's
    configuration for that model only; they are not TEI flags."""
    from embed_launcher.supervision.gateway_plan import gateway_config

    settings = load(models=MODELS_TOML)
    embed = settings.services[0]
    assert embed.prompts == (("search_query", "query"), ("search_document", "passage"))
    assert not any(flag.startswith("--prompt") for flag, _ in embed.tei_args)

    class Child:
        def __init__(self, name: str, port: int) -> None:
            self.name, self.port = name, port

    config = gateway_config(settings, [Child(s.name, 9000 + i) for i, s in enumerate(settings.services)], created=0)
    m3 = config.find("m3")
    assert m3 is not None and m3.prompts == {"search_query": "query", "search_document": "passage"}
    assert m3.matryoshka_dimensions == (1024, 512)
    assert all(not m.prompts and not m.matryoshka_dimensions for m in config.models if m is not m3)


def test_a_listed_model_takes_its_settings_from_the_file() -> None:
    """EMBED_MODEL orders the models; the file's entry for one of them gives its alias and tuning."""
    settings = load({"EMBED_MODEL": "BAAI/bge-small-en-v1.5,BAAI/bge-m3", "RERANK_ENABLED": "false"},
                    models=MODELS_TOML)
    assert [(s.name, s.served_name) for s in settings.services] == [
        ("embed", "BAAI/bge-small-en-v1.5"), ("embed-m3", "m3"),
        ("sparse", "naver/splade-cocondenser-ensembledistil"),
    ]  # fmt: skip
    assert settings.extra[0].tei_arg("--dtype") == "float16"


def test_gateway_false_with_two_models_on_one_port_is_an_error() -> None:
    """One port cannot serve two TEIs without the gateway: say so, and how to fix it."""
    [problem] = problems({"EMBED_MODEL": "BAAI/bge-small-en-v1.5,BAAI/bge-m3", "EMBED_GATEWAY": "false"})
    assert problem.startswith("EMBED_GATEWAY is false, but port 8000 would serve 2 models")
    assert "Set EMBED_GATEWAY=auto" in problem


def test_gateway_true_puts_even_one_model_behind_the_gateway() -> None:
    assert load({"EMBED_GATEWAY": "true"}).gateway is True


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EMBED_MODEL": "BAAI/bge-m3,BAAI/bge-m3"}, "EMBED_MODEL must be one or more Hugging Face model ids"),
        ({"EMBED_MODEL": "BAAI/bge-m3,"}, "EMBED_MODEL must be one or more Hugging Face model ids"),
        ({"EMBED_GATEWAY": "sometimes"}, "EMBED_GATEWAY must be auto, or true or false"),
        ({"EMBED_GATEWAY_WORKERS": "0"}, "EMBED_GATEWAY_WORKERS must be a whole number of at least 1"),
    ],
)
def test_bad_lists_and_gateway_settings_are_named(env: dict[str, str], expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(env)), problems(env)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[models]\nmodel = 1", "EMBED_MODELS_FILE /srv/models.toml: not valid TOML"),
        ("[[models]]\nalias = \"x\"", "EMBED_MODELS_FILE /srv/models.toml: models[1]: 'model' is missing"),
        ("[[models]]\nmodel = \"a b\"", "EMBED_MODELS_FILE /srv/models.toml: models[1].model must be"),
        ("[[models]]\nmodel = \"BAAI/bge-m3\"\nkind = \"dense\"",
         "EMBED_MODELS_FILE /srv/models.toml: models[1].kind must be one of embed, sparse, rerank; got 'dense'"),
        ("[[models]]\nmodel = \"BAAI/bge-m3\"\nmax_batch_tokenz = 5",
         "EMBED_MODELS_FILE /srv/models.toml: models[1]: unknown key 'max_batch_tokenz'; "
         "did you mean max_batch_tokens?"),
        ("[[models]]\nmodel = \"BAAI/bge-m3\"\ndtype = \"float8\"",
         "EMBED_MODELS_FILE /srv/models.toml: models[1].dtype must be"),
        ("[[models]]\nmodel = \"BAAI/bge-m3\"\n[[models]]\nmodel = \"BAAI/bge-m3\"",
         "EMBED_MODELS_FILE /srv/models.toml: model 'BAAI/bge-m3' is declared twice"),
        ("[[models]]\nmodel = \"BAAI/bge-m3\"\nalias = \"x\"\n"
         "[[models]]\nmodel = \"BAAI/bge-small-en-v1.5\"\nalias = \"x\"",
         "EMBED_MODELS_FILE: two models are served as 'x'"),
        ("models = 3", "EMBED_MODELS_FILE /srv/models.toml: 'models' must be an array of tables"),
        ("[server]\nport = 1", "EMBED_MODELS_FILE /srv/models.toml: unknown table or key 'server'"),
        ("[[models]]\nmodel = \"BAAI/bge-m3\"\nprompts = { search = \"query\" }",
         "EMBED_MODELS_FILE /srv/models.toml: models[1].prompts: unknown input type 'search'"),
        ("[[models]]\nmodel = \"BAAI/bge-m3\"\nprompts = \"query\"",
         "EMBED_MODELS_FILE /srv/models.toml: models[1].prompts must be a table"),
        ("[[models]]\nmodel = \"BAAI/bge-m3\"\nmatryoshka_dimensions = [0]",
         "EMBED_MODELS_FILE /srv/models.toml: models[1].matryoshka_dimensions must be a list"),
    ],
)
def test_every_models_file_problem_names_the_file_and_the_key(text: str, expected: str) -> None:
    """Like the env file: one line per problem, all at once, exit 2."""
    found = problems(models=text)
    assert any(p.startswith(expected) for p in found), found


def test_all_problems_of_a_models_file_are_reported_at_once() -> None:
    text = "[[models]]\nmodel = \"a b\"\n[[models]]\nmodel = \"BAAI/bge-m3\"\nkind = \"dense\"\nfoo = 1"
    assert len(problems(models=text)) == 3


def test_a_missing_models_file_is_a_configuration_error() -> None:
    [problem] = problems({"EMBED_MODELS_FILE": "/etc/nowhere.toml"})
    assert problem == "EMBED_MODELS_FILE /etc/nowhere.toml cannot be read: No such file or directory."


def test_the_example_models_file_loads() -> None:
    """models.example.toml (shipped beside embed.env.example) is a valid models file."""
    text = (Path(__file__).resolve().parent.parent / "models.example.toml").read_text()
    settings = load(models=text)
    assert [s.kind for s in settings.services] == ["embed", "rerank", "embed", "sparse"]
