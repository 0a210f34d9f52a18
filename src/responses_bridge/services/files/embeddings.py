"""``POST /v1/embeddings``: OpenAI's Embeddings API over the deployment's embedder, the one vector stores use
(services/files/retrieval/embedders.py), so that a client's own vectors and the vector stores' are of the same model.

* The local static model (the default): the request is checked here, embedded here, and answered in OpenAI's
  shape (``CreateEmbeddingResponse``). Token-id input (a list of ints, or a list of such lists: what clients that
  count tokens with tiktoken send) is OpenAI's ``cl100k_base`` ids, decoded back to text and embedded as that
  text. ``dimensions`` shortens the vectors: the model's 64 dimensions are PCA components in order of falling
  variance, so a prefix is the model's own best reduction to that size; it is cut and renormalised, as OpenAI
  does for its ``text-embedding-3`` models. ``usage`` counts ``cl100k_base`` tokens (the ids OpenAI's embedding
  models count), not the local model's own, which reads the first 512 of its tokens of each input. An input that
  is too long for OpenAI's token limits whatever it holds is refused on its length before it is tokenized
  (:func:`check_lengths`); the body is bounded by the door, as on every route.
* An upstream embedding model (``RESPONSES_BRIDGE_EMBEDDING_MODEL``): a request for that model is checked the
  same way and then passed, unchanged, to that endpoint; its answer comes back as it is (its vectors, its usage,
  its own refusals). The bridge adds nothing an OpenAI-compatible embeddings server does not already do better.

Every other model is an upstream's (Ollama's ``nomic-embed-text``, a vLLM embedding model): the HTTP door passes
the request to the upstream its model routes to (adapters/http/upstream/embeddings_routes.py), the way
``/v1/chat/completions`` is passed, and that upstream's refusals come back in OpenAI's error shape
(:func:`upstream_error`). The local model's own names are never sent upstream: with another embedder configured they are
a 404 that names the one served. :meth:`EmbeddingService.listed` is the embedder's entry in ``GET /v1/models``.
"""

from __future__ import annotations

import asyncio
import base64
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ...engine.chat_tokens import load_encoding
from ...protocol.errors import APIError
from .embedder_names import LOCAL_MODEL, EmbedderNames
from .embedding_refusals import upstream_error
from .retrieval.embedders import Embedder, EmbeddingError, LocalStaticEmbedder, UpstreamEmbedder, normalise

if TYPE_CHECKING:
    import numpy as np

MAX_INPUTS = 2048  # OpenAI's: items in one request's input array
MAX_INPUT_TOKENS = 8192  # OpenAI's: tokens of one input
MAX_REQUEST_TOKENS = 300_000  # OpenAI's: tokens summed over a request's inputs
MAX_TOKEN_CHARS = 128
"""The most characters one ``cl100k_base`` token stands for: its longest token is 128 bytes (a run of spaces), its
special tokens are shorter, and a character is at least one byte. So a text of ``n`` characters has at least
``n / 128`` tokens, and one too long for the limits is refused on its length (no work) instead of after the
tokenizer has spent seconds of CPU and hundreds of MiB on it (a 60 MB string: 9 s, +900 MiB)."""
FIELDS = frozenset({"input", "model", "encoding_format", "dimensions", "user"})
ENCODING_FORMATS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingRequest:
    """A checked request: ``inputs`` holds each input as given, a string or a list of token ids."""

    model: str
    inputs: list[str | list[int]]
    encoding_format: str
    dimensions: int | None


def _invalid(message: str, param: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_list(value: list[Any], param: str) -> list[int]:
    if not value:
        raise _invalid(f"'{param}' is an empty list of tokens: give at least one token id.", param)
    if not all(_is_int(token) for token in value):
        raise _invalid(f"'{param}' must be a string, a list of strings, a list of token ids (integers) or a list "
                       "of such lists, not a mix.", param, "invalid_type")
    return value


def _inputs(value: Any) -> list[str | list[int]]:
    """``input`` as OpenAI takes it: a string, a list of strings, a list of token ids, a list of token-id lists."""
    if isinstance(value, str):
        if not value:
            raise _invalid("'input' cannot be an empty string.", "input")
        return [value]
    if not isinstance(value, list):
        raise _invalid("'input' must be a string, a list of strings, a list of token ids or a list of such lists.",
                       "input", "invalid_type")
    if not value:
        raise _invalid("'input' cannot be an empty list.", "input")
    if all(_is_int(item) for item in value):
        return [value]  # one input, given as its token ids (held to the tokens of one input, not MAX_INPUTS)
    if len(value) > MAX_INPUTS:
        raise _invalid(f"'input' has {len(value)} items; at most {MAX_INPUTS} are allowed in one request.", "input")
    inputs: list[str | list[int]] = []
    for index, item in enumerate(value):
        param = f"input[{index}]"
        if isinstance(item, str):
            if not item:
                raise _invalid(f"'{param}' cannot be an empty string.", param)
            inputs.append(item)
        elif isinstance(item, list):
            inputs.append(_token_list(item, param))
        else:
            raise _invalid(f"'{param}' must be a string or a list of token ids.", param, "invalid_type")
    if len({type(item) for item in inputs}) > 1:
        raise _invalid("'input' mixes strings and token lists: give one kind.", "input", "invalid_type")
    return inputs


def parse_request(body: dict[str, Any]) -> EmbeddingRequest:
    """The request's fields checked the way OpenAI checks them: a 400 naming the field for anything else."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise _invalid(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0], "unknown_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required: the embedding model's name, a non-empty string.", "model",
                       "missing_required_parameter" if model is None else "invalid_type")
    if "input" not in body:
        raise _invalid("'input' is required.", "input", "missing_required_parameter")
    inputs = _inputs(body["input"])
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    elif encoding_format not in ENCODING_FORMATS:
        raise _invalid("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise _invalid("'dimensions' must be a positive integer.", "dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid("'user' must be a string.", "user", "invalid_type")
    return EmbeddingRequest(model, inputs, encoding_format, dimensions)


def _model_not_found(model: str, served: str) -> APIError:
    return APIError(404, f"The model '{model}' does not exist or you do not have access to it; this server embeds "
                         f"with '{served}'.", type="invalid_request_error", param="model", code="model_not_found")


def check_lengths(inputs: list[str | list[int]]) -> None:
    """Refuse inputs that cannot be within OpenAI's token limits, by their lengths alone (before any of them is
    tokenized or decoded): a text's fewest possible tokens is its characters over :data:`MAX_TOKEN_CHARS`, a
    token-id list's is its length."""
    total = 0
    for index, item in enumerate(inputs):
        param = "input" if len(inputs) == 1 else f"input[{index}]"
        least = len(item) if isinstance(item, list) else -(-len(item) // MAX_TOKEN_CHARS)
        if least > MAX_INPUT_TOKENS:
            if isinstance(item, list):
                raise _invalid(f"'{param}' has {len(item)} tokens; an input may have at most {MAX_INPUT_TOKENS}.",
                               param)
            raise _invalid(f"'{param}' has {len(item)} characters, more than {MAX_INPUT_TOKENS} tokens can hold (a "
                           f"token is at most {MAX_TOKEN_CHARS} characters); an input may have at most "
                           f"{MAX_INPUT_TOKENS} tokens.", param)
        total += least
    if total > MAX_REQUEST_TOKENS:
        raise _invalid(f"The request's inputs have more than {MAX_REQUEST_TOKENS} tokens in all; send fewer at a "
                       "time.", "input")


def _texts_and_tokens(inputs: list[str | list[int]]) -> tuple[list[str], int]:
    """Each input as text (token ids decoded), and the request's ``cl100k_base`` token count, each input held to
    OpenAI's limits. Runs in a worker thread: counting a few MB of text takes the CPU for a while."""
    encoding = load_encoding()
    texts: list[str] = []
    total = 0
    for index, item in enumerate(inputs):
        param = "input" if len(inputs) == 1 else f"input[{index}]"
        if isinstance(item, str):
            texts.append(item)
            count = (len(encoding.encode(item, disallowed_special=())) if encoding is not None
                     else math.ceil(len(item) / 4))
        else:
            if encoding is None:
                raise _invalid("This server cannot decode token ids (its cl100k_base encoding is not available): "
                               "send the text instead.", param, "unsupported_input")
            try:
                texts.append(encoding.decode(item))
            except (KeyError, ValueError, OverflowError):
                raise _invalid(f"'{param}' holds a token id that is not in cl100k_base (0 to "
                               f"{encoding.max_token_value}).", param) from None
            count = len(item)
        if count > MAX_INPUT_TOKENS:
            raise _invalid(f"'{param}' has {count} tokens; an input may have at most {MAX_INPUT_TOKENS}.", param)
        total += count
        if total > MAX_REQUEST_TOKENS:
            raise _invalid(f"The request's inputs have more than {MAX_REQUEST_TOKENS} tokens in all; send fewer "
                           "at a time.", "input")
    return texts, total


def _shorten(vectors: np.ndarray, dimensions: int | None, served: int) -> np.ndarray:
    """The first ``dimensions`` components, each row renormalised to unit length."""
    if dimensions is None or dimensions == served:
        return vectors
    if dimensions > served:
        raise _invalid(f"'dimensions' is {dimensions}, but this model's vectors have {served}: ask for "
                       f"{served} or fewer.", "dimensions")
    return normalise(vectors[:, :dimensions].copy())


def _encoded(row: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # OpenAI's: the little-endian float32 bytes, base64
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return [float(value) for value in row]


class EmbeddingService:
    """The Embeddings API over one embedder."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.names = names_of(embedder)

    def served_model(self) -> str:
        """The model name a request must give (the local model's also by its full, digest-carrying name)."""
        served = self.names.served_model()
        return served if served is not None else self.embedder.name  # none: its name raises the 400 saying how

    def _serves(self, model: str) -> bool:
        return self.names.serves(model)

    def answers(self, model: str) -> bool:
        """Whether this service answers a request for ``model`` (:meth:`EmbedderNames.answers`)."""
        return self.names.answers(model)

    def listed(self) -> dict[str, Any] | None:
        """The embedder as a ``GET /v1/models`` entry, or None (:meth:`EmbedderNames.listed`)."""
        return self.names.listed()

    async def create(self, body: dict[str, Any]) -> tuple[int, bytes]:
        """The answer's status and JSON body."""
        request = parse_request(body)
        if not self._serves(request.model):
            raise _model_not_found(request.model, self.served_model())
        embedder = self.embedder
        if isinstance(embedder, UpstreamEmbedder):
            return await self._forward(embedder, body, len(request.inputs))
        check_lengths(request.inputs)  # what cannot fit is refused before the tokenizer spends anything on it
        texts, tokens = await asyncio.to_thread(_texts_and_tokens, request.inputs)
        try:
            vectors = await embedder.embed(texts)
        except EmbeddingError as exc:
            raise APIError(502, f"The embedding model failed: {exc}", code="embedding_failed") from None
        except UnicodeEncodeError:  # a lone surrogate (the JSON parser of either door refuses it before this)
            raise _invalid("'input' is not valid Unicode text.", "input") from None
        vectors = _shorten(vectors, request.dimensions, embedder.dimensions)
        data = [{"object": "embedding", "index": index, "embedding": _encoded(row, request.encoding_format)}
                for index, row in enumerate(vectors)]
        answer = {"object": "list", "data": data, "model": request.model,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return 200, orjson.dumps(answer)

    async def _forward(self, embedder: UpstreamEmbedder, body: dict[str, Any], inputs: int) -> tuple[int, bytes]:
        """The request, as it came, to the configured embeddings endpoint; its answer, as it is, when it is a
        success or an OpenAI-shaped refusal (4xx); a failure of the endpoint itself is a 502 that says so."""
        try:
            status, answer = await embedder.forward(orjson.dumps(body), inputs)
        except EmbeddingError as exc:
            raise APIError(502, f"The embedding model failed: {exc}", code="embedding_failed") from None
        try:
            decoded = orjson.loads(answer)
        except orjson.JSONDecodeError:
            decoded = None
        if status == 200 and isinstance(decoded, dict) and isinstance(decoded.get("data"), list):
            return status, answer
        error = decoded.get("error") if isinstance(decoded, dict) else None
        if 400 <= status < 500 and isinstance(error, dict) and isinstance(error.get("message"), str):
            raise upstream_error(status, answer)  # the endpoint's own refusal, its fields kept, in OpenAI's shape
        raise APIError(502, f"The embedding model answered HTTP {status}: {answer[:300]!r}",
                       code="embedding_failed")


def names_of(embedder: Embedder) -> EmbedderNames:
    """The names ``embedder`` answers to (the same as :func:`embedder_names.names_from_settings` says of the
    embedder the settings build)."""
    if isinstance(embedder, UpstreamEmbedder):
        return EmbedderNames(upstream_model=embedder.model)
    if isinstance(embedder, LocalStaticEmbedder):
        return EmbedderNames(local_name=lambda: embedder.name)
    return EmbedderNames()


__all__ = ["LOCAL_MODEL", "EmbeddingRequest", "EmbeddingService", "check_lengths", "names_of", "parse_request",
           "upstream_error"]
