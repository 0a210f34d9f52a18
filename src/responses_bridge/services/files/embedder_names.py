"""Which embedder the deployment has and the names it answers to, known from the settings alone.

``GET /v1/models`` lists the embedder and ``POST /v1/embeddings`` decides whether a model is the embedder's or an
upstream's at every request; neither needs the embedder itself (retrieval/embedders.py, imported by the first
embedding: services/files/vector_stores_on_demand.py). The local model's identity (its files' digest) is read
here too, from the files the ``tokenlearn-static-model`` wheel ships, without importing the package: its import
loads the Rust encoder, which only an embedding needs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...config.settings import Settings

LOCAL_MODEL = "tokenlearn-static-model"
OWNER = "responses-bridge"  # ``owned_by`` of the embedder's ``GET /v1/models`` entry
LOCAL_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")  # what the vectors depend on


def bundled_model_dir() -> str | None:
    """Where the installed package keeps its model (``static_model/model``, the directory its ``_model_dir``
    checks), found without importing it: its import loads the Rust encoder, which only an embedding needs, and the
    embedder's name (the digest of these files) only a vector store. None when the package is not installed."""
    try:
        spec = importlib.util.find_spec("static_model")
    except ImportError:  # a finder refusing the package: as good as not installed
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


@functools.cache
def package_model_dir() -> str:
    from static_model import _model_dir  # the package's own check that its bundled files are there

    return str(_model_dir())


@functools.cache
def local_model_digest(model_dir: str | None = None) -> str:
    """SHA-256 of the model files, in a fixed order: the identity of the vectors the model produces."""
    directory = Path(model_dir or package_model_dir())
    digest = hashlib.sha256()
    for name in LOCAL_MODEL_FILES:
        digest.update(name.encode() + b"\0")
        with (directory / name).open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def local_embedder_name(model_dir: str | None = None) -> str:
    return f"local:{LOCAL_MODEL}@sha256:{local_model_digest(model_dir)[:16]}"


@dataclass(frozen=True)
class EmbedderNames:
    """The names of one embedder: ``upstream_model`` (an upstream embedding model), or ``local_name`` (the local
    model's full, digest-carrying name, read when first needed), or neither (no embedder)."""

    upstream_model: str | None = None
    local_name: Callable[[], str] | None = None

    def served_model(self) -> str | None:
        """The model name a request must give (the local model's also by its full name); None: no embedder."""
        if self.upstream_model is not None:
            return self.upstream_model
        return LOCAL_MODEL if self.local_name is not None else None

    def serves(self, model: str) -> bool:
        """Whether the embedder embeds for ``model``."""
        if self.local_name is not None:
            if model == LOCAL_MODEL:
                return True
            name = self.local_name()
            return model in (name, name.removeprefix("local:"))
        return self.upstream_model is not None and model == self.upstream_model

    def answers(self, model: str) -> bool:
        """Whether the embeddings service answers a request for ``model`` (its embedder's names, and the local
        model's, served or not: with another embedder they are its 404); any other model is an upstream's,
        passed through by the door."""
        if self.serves(model):
            return True
        local = model == LOCAL_MODEL or model.startswith((f"local:{LOCAL_MODEL}@", f"{LOCAL_MODEL}@"))
        return self.local_name is None and local

    def listed(self) -> dict[str, Any] | None:
        """The embedder as a ``GET /v1/models`` entry (``owned_by: responses-bridge``), listed beside the
        upstreams' models; None when this deployment has none."""
        served = self.served_model()
        return None if served is None else {"id": served, "object": "model", "created": 0, "owned_by": OWNER}


def names_from_settings(settings: Settings) -> EmbedderNames:
    """The names of the embedder ``embedder_from_settings`` builds (retrieval/embedders.py), without building it:
    the upstream's model when ``RESPONSES_BRIDGE_EMBEDDING_MODEL`` is set, else the local model when its extra is
    installed, else none."""
    if settings.embedding_model:
        return EmbedderNames(upstream_model=settings.embedding_model)
    model_dir = bundled_model_dir()
    if model_dir is None:
        return EmbedderNames()
    return EmbedderNames(local_name=functools.partial(local_embedder_name, model_dir))
