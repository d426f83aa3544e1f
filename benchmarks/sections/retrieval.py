"""The retrieval section: query latency and recall of flat, IVF and HNSW faiss indexes on synthetic clustered vectors
(`--vectors` of dimension `--dim`, at each `--cluster-noise`): build time (s), milliseconds per query (sent one at a
time), recall@50 (the fraction of the exact 50 nearest found) and the speed-up over the flat index (a ratio)."""
from __future__ import annotations

import time

import numpy as np


def clustered_vectors(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray, noise: float = 0.35) -> np.ndarray:
    """Unit vectors around random cluster centres: closer to real embeddings than uniform noise. `noise` is the
    spread per dimension around a centre of unit spread per dimension: 0.35 gives well separated clusters (easy for
    IVF), 1.0 clusters that overlap as much as they stand apart (harder, nearer to real sentence embeddings)."""
    x = centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def search_seconds(index, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Seconds per query, the queries sent one at a time as the study sends them (one per test document): a
    batch would let the flat index use a matrix product and hide the latency a document waits for."""
    start = time.perf_counter()
    ids = np.vstack([index.search(queries[i:i + 1], k)[1] for i in range(len(queries))])
    return (time.perf_counter() - start) / len(queries), ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def run(args) -> dict:
    rows = []
    for noise in args.cluster_noise:
        rows += retrieval_rows(args, noise)
    good = [r for r in rows if r["index"] != "flat (exact)" and r["recall@50"] >= 0.95]
    worst_noise = max(args.cluster_noise)
    hardest = [r for r in good if r["cluster noise"] == worst_noise]
    best = max(hardest, key=lambda r: r["speed-up"]) if hardest else None
    return {"vectors": args.vectors, "dim": args.dim, "queries": args.queries, "rows": rows,
            "best at the largest noise": best,
            "goal": "an approximate index with recall@50 >= 0.95 at least 10x faster than flat"}


def retrieval_rows(args, noise: float) -> list[dict]:
    import faiss

    rng = np.random.default_rng(0)
    dim, n, k = args.dim, args.vectors, 50
    centres = rng.standard_normal((max(64, n // 1000), dim)).astype(np.float32)
    start = time.perf_counter()
    vectors = np.concatenate([clustered_vectors(min(100_000, n - i), dim, rng, centres, noise)
                              for i in range(0, n, 100_000)])
    queries = clustered_vectors(args.queries, dim, rng, centres, noise)
    print(f"{n} vectors of dimension {dim}, cluster noise {noise}, made in {time.perf_counter() - start:.0f} s",
          flush=True)
    rows = []
    flat = faiss.IndexFlatL2(dim)
    flat.add(vectors)
    flat_s, truth = search_seconds(flat, queries, k)
    rows.append({"cluster noise": noise, "index": "flat (exact)", "build s": 0.0, "ms/query": 1000 * flat_s,
                 "recall@50": 1.0, "speed-up": 1.0})
    nlist = int(4 * np.sqrt(n))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
    start = time.perf_counter()
    ivf.train(vectors[rng.permutation(n)[:min(n, 40 * nlist)]])
    ivf.add(vectors)
    build = time.perf_counter() - start
    for nprobe in (4, 8, 16, 32, 64):
        ivf.nprobe = nprobe
        seconds, ids = search_seconds(ivf, queries, k)
        rows.append({"cluster noise": noise, "index": f"IVF{nlist},Flat nprobe={nprobe}", "build s": build,
                     "ms/query": 1000 * seconds, "recall@50": recall(ids, truth), "speed-up": flat_s / seconds})
        print(rows[-1], flush=True)
    del ivf
    hnsw = faiss.IndexHNSWFlat(dim, 32)
    hnsw.hnsw.efConstruction = 64
    start = time.perf_counter()
    hnsw.add(vectors)
    build = time.perf_counter() - start
    for ef in (64, 128, 256):
        hnsw.hnsw.efSearch = ef
        seconds, ids = search_seconds(hnsw, queries, k)
        rows.append({"cluster noise": noise, "index": f"HNSW32 efSearch={ef}", "build s": build,
                     "ms/query": 1000 * seconds, "recall@50": recall(ids, truth), "speed-up": flat_s / seconds})
        print(rows[-1], flush=True)
    return rows
