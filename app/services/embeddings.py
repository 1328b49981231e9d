"""Embeddings: the rules of an embedding call, whatever dialect asked for it.

``embed(...)`` checks the inputs (strings, or token arrays where the model takes them) and the
asked ``dimensions`` against the model, calls the model and checks what it answered. Bounds:
at most ``MAX_INPUTS`` inputs, each at most ``MAX_MESSAGE_LENGTH`` characters (or tokens).
"""
import logging

from app.errors import ApiError, BadRequest, ProviderError, ProviderUnavailable
from app.observe import metrics
from app.providers.llm import EmbeddingRequest, Embeddings, Usage, estimate_tokens

log = logging.getLogger("chatport.embeddings")

MAX_INPUTS = 2048  # OpenAI's bound on one request's inputs
MAX_TOKEN_ID = 2**31 - 1


def _bad(message, field, why="invalid"):
    return BadRequest(message, fields={field: why})


def _unsupported(model, field, what):
    return BadRequest(f"Model {model.name} does not support {what}", code="unsupported_parameter",
                      fields={field: f"not supported by {model.name}"})


def _is_tokens(value):
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def check_inputs(inputs, model, config):
    """The inputs as a list of strings or token arrays: ``inputs`` may be a string, a list of
    strings, a token array (a list of integers) or a list of token arrays. Raises BadRequest
    naming ``input`` (or the input at fault: ``input.3``)."""
    if isinstance(inputs, str) or (_is_tokens(inputs) and inputs):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise _bad("input must be a non-empty string, a list of strings or token arrays", "input", "empty")
    if len(inputs) > MAX_INPUTS:
        raise _bad(f"at most {MAX_INPUTS} inputs", "input", "too many")
    limit = config["MAX_MESSAGE_LENGTH"]
    kind = None
    for i, item in enumerate(inputs):
        field = f"input.{i}"
        if isinstance(item, str):
            this = "text"
        elif _is_tokens(item):
            this = "tokens"
            if "tokens" not in model.supports:
                raise _unsupported(model, field, "token array inputs")
            if not all(0 <= t <= MAX_TOKEN_ID for t in item):
                raise _bad(f"{field}: token ids are integers from 0 to {MAX_TOKEN_ID}", field)
        else:
            raise _bad(f"{field} must be a string or a token array (a list of integers)", field)
        if kind is not None and this != kind:
            raise _bad("input mixes strings and token arrays", field, "mixed")
        kind = this
        if not item:
            raise _bad(f"{field} is empty", field, "empty")
        if len(item) > limit:
            raise _bad(f"{field} is longer than {limit} {'characters' if this == 'text' else 'tokens'}", field,
                       "too long")
    return inputs


def check_dimensions(dimensions, model):
    if dimensions is None:
        return None
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise _bad("dimensions must be a positive integer", "dimensions")
    if "dimensions" not in model.supports:
        raise _unsupported(model, "dimensions", "dimensions")
    if model.dimensions and dimensions > model.dimensions:
        raise _bad(f"dimensions must be at most {model.dimensions} for {model.name}", "dimensions", "too large")
    return dimensions


def embed(registry, model_name, inputs, dimensions=None, user=None):
    """Embed ``inputs`` with the embedding model ``model_name`` (a name or an alias):
    ``(model, Embeddings)``, one vector per input, in order.

    Raises BadRequest (unknown model, bad inputs or dimensions: nothing is called), the
    provider's Provider* errors, ProviderUnavailable when the model answers something else than
    one vector per input, and a 502 for a plugin that fails otherwise. Usage is estimated (about
    4 characters a token) when the model reports none."""
    model = registry.get(model_name, kind="embedding")
    inputs = check_inputs(inputs, model, registry.config)
    dimensions = check_dimensions(dimensions, model)
    try:
        result = model.embed(EmbeddingRequest(inputs=inputs, dimensions=dimensions, user=user))
    except ApiError as exc:
        if isinstance(exc, ProviderError):
            metrics.provider_error(exc)
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin bug is the provider's failure, not a 500
        log.exception("embedding model %s failed", model.name)
        metrics.provider_error(exc)
        raise ProviderError(f"Provider {model.name} failed: {type(exc).__name__}") from None
    vectors = getattr(result, "vectors", None)
    if not isinstance(vectors, list) or len(vectors) != len(inputs) or not all(
            isinstance(v, list) and v for v in vectors):
        error = ProviderUnavailable(f"Provider {model.name} did not answer one vector per input")
        metrics.provider_error(error)
        raise error
    usage = result.usage
    if usage is None or not usage.prompt_tokens:
        usage = Usage(sum(estimate_tokens(i) if isinstance(i, str) else len(i) for i in inputs), 0, estimated=True)
    return model, Embeddings(vectors=vectors, usage=usage)
