"""The openai plugin's embedding models (``POST /embeddings``) against the fake upstream, and
their registration from configuration."""
import pytest

from app import errors
from app.providers.llm import EmbeddingRequest, ModelRegistry, Usage, estimate_tokens
from tests.fakes import FakeOpenAI


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def settings(fake, **config):
    return {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-test", "OPENAI_MODELS": [],
            "OPENAI_EMBEDDING_MODELS": ["text-embedding-3-small"], "OPENAI_MAX_RETRIES": 0,
            "OPENAI_READ_TIMEOUT": 5, "OPENAI_CONNECT_TIMEOUT": 2, **config}


def openai_embedder(fake, **config):
    """``openai/text-embedding-3-small`` on the fake, as if it were OpenAI's own API: asked for
    base64 vectors."""
    from plugins.openai_provider import OpenAIEmbeddingModel

    registered = ModelRegistry(settings(fake, **config)).get("openai/text-embedding-3-small", kind="embedding")
    assert registered.encoding == "float"  # at a base URL of its own it is an OpenAI-compatible server
    return OpenAIEmbeddingModel("openai", registered.model_id, registered.client, official=True)


def compatible_embedder(fake):
    """``ollama/nomic-embed-text`` on the fake as an OPENAI_COMPATIBLE server: asked for floats."""
    config = settings(fake, OPENAI_COMPATIBLE={"ollama": {"base_url": fake.base_url, "max_retries": 0,
                                                          "embedding_models": ["nomic-embed-text"]}})
    return ModelRegistry(config).get("ollama/nomic-embed-text", kind="embedding")


@pytest.mark.parametrize("kind, encoding", [("openai", "base64"), ("compatible", "float")])
def test_vectors_come_back_in_input_order(fake, kind, encoding):
    model = openai_embedder(fake) if kind == "openai" else compatible_embedder(fake)
    result = model.embed(EmbeddingRequest(["the first text", "a second one"]))
    assert result.vectors == [FakeOpenAI.vector("the first text"), FakeOpenAI.vector("a second one")]
    assert result.usage == Usage(prompt_tokens=6)
    body = fake.last.body
    assert fake.last.path == "/v1/embeddings"
    assert body == {"model": model.model_id, "input": ["the first text", "a second one"],
                    "encoding_format": encoding}
    assert fake.last.headers["authorization"] == ("Bearer sk-test" if kind == "openai" else "Bearer not-needed")


def test_dimensions_and_user_are_sent(fake):
    result = openai_embedder(fake).embed(EmbeddingRequest(["hello"], dimensions=3, user="u-1"))
    assert fake.last.body["dimensions"] == 3 and fake.last.body["user"] == "u-1"
    assert result.vectors == [FakeOpenAI.vector("hello", 3)]


def test_token_arrays_are_sent_as_they_are(fake):
    inputs = [[1, 2, 3], [40, 50]]
    result = compatible_embedder(fake).embed(EmbeddingRequest(inputs))
    assert fake.last.body["input"] == inputs
    assert result.vectors == [FakeOpenAI.vector([1, 2, 3]), FakeOpenAI.vector([40, 50])]
    assert result.usage == Usage(prompt_tokens=5)


def test_usage_is_estimated_when_the_server_reports_none(fake):
    fake.script(usage=False)
    result = compatible_embedder(fake).embed(EmbeddingRequest(["some words here", [7, 8, 9, 10]]))
    assert result.usage == Usage(prompt_tokens=estimate_tokens("some words here") + 4, estimated=True)


def test_a_reply_out_of_order_is_put_back_in_order(fake):
    fake.script(raw='{"object": "list", "data": [{"index": 1, "embedding": [0.5, 0.25]},'
                    ' {"index": 0, "embedding": [1.0, 0.0]}], "usage": {"prompt_tokens": 2}}')
    result = compatible_embedder(fake).embed(EmbeddingRequest(["a", "b"]))
    assert result.vectors == [[1.0, 0.0], [0.5, 0.25]]


@pytest.mark.parametrize("status, cls", [(400, errors.ProviderBadRequest), (401, errors.ProviderAuthError),
                                         (429, errors.ProviderRateLimited), (503, errors.ProviderUnavailable)])
def test_upstream_errors_map_to_taxonomy(fake, status, cls):
    fake.script(status=status, error_message="upstream says no", retry_after="9")
    with pytest.raises(cls) as info:
        openai_embedder(fake).embed(EmbeddingRequest(["x"]))
    assert type(info.value) is cls
    if status == 429:
        assert info.value.headers == {"Retry-After": "9"}
        assert len(fake.requests) == 1  # passed on, not slept on


def test_the_fakes_own_refusal_is_a_bad_request(fake):
    with pytest.raises(errors.ProviderBadRequest, match="input"):
        openai_embedder(fake).embed(EmbeddingRequest([""]))


@pytest.mark.parametrize("raw", [
    "{not json", "[]", '{"data": []}',
    '{"data": [{"index": 0, "embedding": [1.0]}]}',  # one vector for two inputs
    '{"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]}',  # one index twice
    '{"data": [{"index": 0, "embedding": "%%%"}, {"index": 1, "embedding": [1.0]}]}',  # not base64
    '{"data": [{"index": 0, "embedding": ["a"]}, {"index": 1, "embedding": [1.0]}]}',  # not numbers
    '{"data": [{"index": 0, "embedding": 3}, {"index": 1, "embedding": [1.0]}]}',
    '{"data": [{"index": 5, "embedding": [1.0]}, {"index": 1, "embedding": [1.0]}]}',
    '{"data": [{"index": -1, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}',
    '{"data": [{"index": 0, "embedding": []}, {"index": 1, "embedding": [1.0]}]}',
])
def test_malformed_reply_is_unavailable(fake, raw):
    fake.script(raw=raw)
    with pytest.raises(errors.ProviderUnavailable):
        compatible_embedder(fake).embed(EmbeddingRequest(["a", "b"]))


def test_connection_refused_is_unavailable(fake):
    model = openai_embedder(fake)
    fake.stop()
    with pytest.raises(errors.ProviderUnavailable):
        model.embed(EmbeddingRequest(["a"]))


def test_no_key_is_an_auth_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    model = ModelRegistry({"OPENAI_EMBEDDING_MODELS": "e"}).get("openai/e", kind="embedding")
    with pytest.raises(errors.ProviderAuthError):
        model.embed(EmbeddingRequest(["a"]))


# ---------------------------------------------------------------- registration

def test_the_default_embedding_model_needs_an_openai_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert set(ModelRegistry({}).embedding_models) == {"echo/embed"}  # echo's, always there
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    registry = ModelRegistry({})
    assert set(registry.embedding_models) == {"echo/embed", "openai/text-embedding-3-small"}
    model = registry.embedding_models["openai/text-embedding-3-small"]
    assert (model.provider, model.model_id, model.dimensions) == ("openai", "text-embedding-3-small", 1536)
    assert model.supports == {"dimensions", "tokens"}
    assert registry.plugins["openai/text-embedding-3-small"] == "openai"
    assert "openai/text-embedding-3-small" not in registry.models  # not a chat model


def test_embedding_models_from_configuration(fake, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_EMBEDDING_MODELS": "text-embedding-3-large, e5",
              "OPENAI_COMPATIBLE": {
                  "ollama": {"base_url": fake.base_url, "embedding_models": ["nomic-embed-text"]},
                  "vllm": {"base_url": fake.base_url, "models": ["llama"]}}}
    registry = ModelRegistry(config)
    assert set(registry.embedding_models) == {"openai/text-embedding-3-large", "openai/e5",
                                              "ollama/nomic-embed-text", "echo/embed"}
    assert {n for n in registry.models if registry.plugins[n] == "openai"} == {"vllm/llama"}
    assert registry.embedding_models["openai/e5"].dimensions == 0  # not known
    ollama = registry.embedding_models["ollama/nomic-embed-text"]
    assert ollama.description == f"OpenAI-compatible embedding model at {fake.base_url}"
    assert not ollama.client.created  # registering creates no client
    assert ollama.embed(EmbeddingRequest(["hi"])).vectors == [FakeOpenAI.vector("hi")]
    assert fake.last.body["model"] == "nomic-embed-text"


def test_an_empty_list_turns_the_default_off(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert set(ModelRegistry({"OPENAI_EMBEDDING_MODELS": []}).embedding_models) == {"echo/embed"}
    assert set(ModelRegistry({"OPENAI_EMBEDDING_MODELS": ""}).embedding_models) == {"echo/embed"}
