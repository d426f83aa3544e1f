"""The retrievers section: indexing throughput of every retriever (exact MiniLM, minilm-static, BM25; re-ranking's
per-query embedding) on the same train chunks, in one process: chunks per second and the ratio to exact MiniLM's."""
from __future__ import annotations

import time

import numpy as np

from common import study_config


def run(args) -> dict:
    """Chunks per second of indexing the same `--embed-chunks` train chunks with each retriever, in one process,
    each the best of `--embed-rounds` rounds taken in turn (the VM's speed drifts between minutes), as a ratio to
    exact MiniLM's. Re-ranking indexes nothing of its own (its first stages are BM25 and the static index); its
    cost is MiniLM embeddings of each query's candidates, shown as candidates per second (the same encoder)."""
    from ttt_core.models import load_embedder
    from ttt_core.retrievers import BM25Index
    from ttt_core.study import prepare

    config = study_config(args.params, device=args.device)
    study = prepare(config, progress=False)
    rng = np.random.default_rng(0)
    rows = rng.permutation(study.corpus.rows("train"))[:args.embed_chunks]
    texts = study.corpus.texts(rows)
    embedders = {name: load_embedder(name, config.work_path, config.device, config.seed)
                 for name in ("minilm", "minilm-static")}
    indexers = {f"exact {name} (dense)": (lambda e=e: e.encode(texts, None)) for name, e in embedders.items()}
    indexers["bm25 (bm25s)"] = lambda: BM25Index.build(texts, rows, {})
    for encode in indexers.values():  # warm-up
        encode()
    best = {name: float("inf") for name in indexers}
    for _ in range(args.embed_rounds):
        for name, index in indexers.items():
            start = time.perf_counter()
            index()
            best[name] = min(best[name], time.perf_counter() - start)
    reference = best["exact minilm (dense)"]
    result = {"chunks": len(texts), "rounds": args.embed_rounds,
              "rows": [{"retriever": name, "chunks per second": len(texts) / seconds,
                        "throughput / exact MiniLM": reference / seconds} for name, seconds in best.items()]}
    result["rows"].append({"retriever": "rerank (MiniLM on each query's candidates)",
                           "chunks per second": len(texts) / reference, "throughput / exact MiniLM": 1.0})
    result["goal"] = ("indexing the large mini-Pile (121,645 train chunks) within minutes on this CPU: the "
                      "throughput ratio to exact MiniLM says which retrievers can")
    print(result, flush=True)
    return result
