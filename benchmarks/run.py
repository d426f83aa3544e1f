"""The performance study in one command: every figure as a ratio measured in one process on one machine.

    .venv/bin/python benchmarks/run.py                          # every section (needs `make prepare` first)
    .venv/bin/python benchmarks/run.py --only flops protocol    # some sections; the others keep their results
    .venv/bin/python benchmarks/run.py --quick                  # small sizes, to check the code paths

Each finished section is stored in benchmarks/results.json at once (a crash or kill loses only the section
that was running), and benchmarks/results.md is rendered from it with the machine, the date and the command;
the book's appendix includes that file. Speed goals are measured here, never asserted in tests.

Sections:
  flops     achieved FLOP/s of one TTT-NN training step over a large fp32 matrix product's (goal >= 0.6)
  threads   one process on every core against one single-threaded process per core (each document is
            independent): training steps per second of the machine, the thread setting tried
  speedups  each change made for speed (and each tried) against the code before it, in fresh processes on the
            same documents: wall-time ratio and the largest relative difference of any log-likelihood
  protocol  ours (scoring only at the k grid, weights restored in place) against the official code's
            protocol (the document re-scored after every neighbour, the model restored from a deep copy):
            wall-time ratio at k = 50 (goal >= 3x) with bits per byte equal at the shared k
  overheads restore, retrieval and scoring as shares of one document's TTT-NN time (goals: restore < 2 %,
            everything but training < 15 % at k = 50)
  embed     index-build embedding throughput, length-sorted batches against input-order batches and against
            SentenceTransformer.encode (with --sentence-transformers DIR: it is kept out of the study's environment)
  retrievers indexing throughput of every retriever (exact MiniLM, minilm-static, BM25; re-ranking's per-query
            embedding) on the same train chunks, each as a ratio to exact MiniLM's, in one process
  retrieval query latency and recall@50 of flat, IVF and HNSW faiss indexes on synthetic vectors
  memory    peak resident memory of one TTT-NN document per model and optimizer (each in its own process),
            and the bits-per-byte effect of Adafactor against AdamW where both fit
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import (HERE, ROOT, child_result, failure_reason, machine, protocol_documents, run_child,
                    study_config, sync, time_training_step, typical_neighbor_tokens)

RESULTS = HERE / "results.json"
REPORT = HERE / "results.md"
SECTIONS = ("flops", "speedups", "threads", "protocol", "overheads", "embed", "retrievers", "retrieval", "memory")


# ------------------------------------------------------------------------------------------------- flops
def matmul_flops(device, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large fp32 matrix product in this process: the machine's practical peak."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def copy_bandwidth(device, gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s of a large tensor copy in this process (read + write): the machine's practical memory bandwidth."""
    a = torch.ones(int(gib * 2**30 / 4), device=device)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        b.copy_(a)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * a.numel() * 4 / best


# Bytes moved per parameter by the parts of a step that touch every weight once, whatever the token count:
# fused AdamW reads weight, gradient and two moments and writes weight and moments (7 x 4 B), gradient clipping
# reads the gradient for its norm and scales it in place (3 x 4 B), the backward pass writes it (4 B).
PARAMETER_PASS_BYTES = 44


def step_flops(model: torch.nn.Module, tokens: int) -> float:
    """FLOPs of one training step (forward and backward) on `tokens` tokens: 6 per matrix-multiply parameter
    per token, counting the output projection over the vocabulary even where it is tied to the embedding (the
    lookup is free, the projection is not), plus attention's two T x T products per layer (x3 for backward)."""
    cfg = model.config
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embedding  # listed once in parameters(), used twice
    matmul_params = sum(p.numel() for p in model.parameters()) - embedding.numel() + (embedding.numel() if tied else 0)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 12 * cfg.num_hidden_layers * tokens * tokens * cfg.num_attention_heads * head_dim
    return 6 * tokens * matmul_params + attention


def section_flops(args) -> dict:
    from ttt_core.models import load_language_model
    from ttt_core.study import prepare

    config = study_config(args.params, device=args.device)
    study = prepare(config, progress=False)
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    # The machine's rate drifts between minutes on this VM (its matrix product measured 141 to 172 GFLOP/s on
    # one day): it is measured before and after every model and the highest of all is the reference, so each
    # ratio is against the best this process saw, never flattered by a slow moment.
    peaks, bandwidths, measured = [matmul_flops(device)], [copy_bandwidth(device)], []
    for name in args.models:
        lm = load_language_model(name, config.work_path, config.device)
        study.lm = lm
        typical = typical_neighbor_tokens(study)
        for tokens in sorted({typical, 512}):
            measured.append((name, tokens, tokens == typical, time_training_step(lm, tokens, args.repeats),
                             step_flops(lm.model, tokens), lm.n_params))
            print(measured[-1], flush=True)
        del lm
        study.lm = None
        peaks.append(matmul_flops(device))
        bandwidths.append(copy_bandwidth(device))
    peak, bandwidth = max(peaks), max(bandwidths)
    rows = []
    for name, tokens, typical, seconds, flops, n_params in measured:
        # The roofline: the step's FLOPs at the matrix product's rate plus its per-weight passes at the copy's.
        floor = flops / peak + PARAMETER_PASS_BYTES * n_params / bandwidth
        rows.append({"model": name, "tokens": tokens, "typical": typical, "step s": seconds,
                     "step GFLOP": flops / 1e9, "achieved GFLOP/s": flops / seconds / 1e9,
                     "matmul GFLOP/s": peak / 1e9, "ratio": flops / seconds / peak,
                     "copy GB/s": bandwidth / 1e9, "roofline s": floor, "roofline / step": floor / seconds})
    return {"matmul GFLOP/s measured": [round(p / 1e9, 1) for p in peaks],
            "rows": rows, "goal": "ratio >= 0.6 for every model (roofline: the step's FLOPs at the matrix "
                                  f"product's rate plus {PARAMETER_PASS_BYTES} bytes per weight at the copy's)"}


# -------------------------------------------------------------------------------------- protocol, overheads
def reference_protocol(lm, document: dict, neighbors: list, config) -> dict:
    """The official code's per-document loop (socialfoundations/tttlm @ 99d4e0a, `TTTLM.train` in
    `code/eval_tttlm.py:254-308`, whose per-neighbour time `c_train` is the aggregates' 'training_cost'): a deep
    copy of the model for the document, the whole document re-scored after every neighbour, the copy dropped at
    the end."""
    from ttt_core.metrics import score_text
    from ttt_core.ttt import make_optimizer, train_on_text

    torch.manual_seed(config.seed)
    base = lm.model
    lm.model = copy.deepcopy(base)
    try:
        optimizer = make_optimizer(lm.model, config)
        evals = [score_text(lm, document["text"], config.eval_context, config.max_eval_tokens)["loglik"]]
        for neighbor in neighbors:
            train_on_text(lm, neighbor.text, optimizer, config)
            evals.append(score_text(lm, document["text"], config.eval_context, config.max_eval_tokens)["loglik"])
    finally:
        lm.model = base
    return {"evals": evals}


class Timers:
    """Wall time spent inside named functions of `ttt_core.ttt`, patched for the duration of a `with`."""

    def __init__(self, module, names):
        self.module, self.names, self.seconds, self.saved = module, names, dict.fromkeys(names, 0.0), {}

    def __enter__(self):
        for name in self.names:
            original = self.saved[name] = getattr(self.module, name)

            def timed(*a, _original=original, _name=name, **kw):
                start = time.perf_counter()
                try:
                    return _original(*a, **kw)
                finally:
                    self.seconds[_name] += time.perf_counter() - start
            setattr(self.module, name, timed)
        return self

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            setattr(self.module, name, original)


def section_protocol(args) -> dict:
    from ttt_core import ttt
    from ttt_core.study import prepare

    config = study_config(args.params, k=args.k, device=args.device)
    study = prepare(config, progress=False)
    lm = study.language_model()
    rows = []
    docs = protocol_documents(study, args.docs) + protocol_documents(study, args.long_docs, args.long_bytes)
    for doc in docs:
        neighbors = study.training_texts(doc)
        start = time.perf_counter()
        ours = ttt.test_time_train(lm, doc, neighbors, config)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        reference = reference_protocol(lm, doc, neighbors, config)
        reference_s = time.perf_counter() - start
        shared = [(e["k"], e["loglik"], reference["evals"][e["k"]]) for e in ours["evals"]]
        worst = max(abs(a - b) / abs(b) for _, a, b in shared)
        rows.append({"document": doc["id"], "bytes": ours["n_bytes"], "tokens": ours["evals"][0]["n_tokens"],
                     "k": config.k, "train s": sum(ours["train_seconds"]),
                     "ours s": ours_s, "reference s": reference_s, "speed-up": reference_s / ours_s,
                     "shared k": len(shared), "max relative loglik difference": worst})
        print(rows[-1], flush=True)
    # Where the ratio goes with the document's length: both protocols take the same k training steps; ours scores
    # len(ks) times, the reference k + 1 times. Scoring time is measured at growing lengths of test text.
    from ttt_core.metrics import score_text

    train_s = float(np.mean([r["train s"] for r in rows]))
    test_text = "".join(study.corpus.dataset.select(study.corpus.rows("test").tolist())["text"]).encode()
    modelled = []
    for size in args.score_bytes:
        piece = test_text[:size].decode(errors="ignore")
        start = time.perf_counter()
        scored = score_text(lm, piece, config.eval_context, config.max_eval_tokens)
        score_s = time.perf_counter() - start
        ours_s, reference_s = train_s + len(config.ks) * score_s, train_s + (config.k + 1) * score_s
        modelled.append({"bytes": len(piece.encode()), "tokens": scored["n_tokens"], "score s": score_s,
                         f"training s (k = {config.k})": train_s, "modelled speed-up": reference_s / ours_s})
        print(modelled[-1], flush=True)
    short = [r for r in rows if not r["document"].endswith("#whole-source")]
    total = {"ours s": sum(r["ours s"] for r in short), "reference s": sum(r["reference s"] for r in short)}
    whole = [r for r in rows if r["document"].endswith("#whole-source")]
    if whole:
        total["whole-source speed-up"] = sum(r["reference s"] for r in whole) / sum(r["ours s"] for r in whole)
    reaching = [m["bytes"] for m in modelled if m["modelled speed-up"] >= 3]
    return {"rows": rows, "speed-up": total["reference s"] / total["ours s"], **total,
            "modelled by document size": modelled, "smallest document (bytes) modelled at >= 3x":
            min(reaching) if reaching else "none measured", "model": config.model,
            "goal": "speed-up >= 3 at k = 50, bits per byte identical at the shared k"}


def section_overheads(args) -> dict:
    from ttt_core import ttt
    from ttt_core.study import prepare

    config = study_config(args.params, k=args.k, device=args.device)
    study = prepare(config, progress=False)
    lm = study.language_model()
    names = ("snapshot_weights", "reset_weights", "reset_optimizer", "score_text", "train_on_text")
    rows = []
    optimizer = ttt.make_optimizer(lm.model, config)  # one per run, as run_ttt: reset in place between documents
    for doc in protocol_documents(study, args.docs):
        start = time.perf_counter()
        neighbors = study.training_texts(doc)
        retrieval = time.perf_counter() - start
        with Timers(ttt, names) as timers:
            start = time.perf_counter()
            ttt.test_time_train(lm, doc, neighbors, config, optimizer)
            inside = time.perf_counter() - start
        total = retrieval + inside
        parts = {"retrieval": retrieval, "restore (snapshot, weights and optimizer reset in place)":
                 sum(timers.seconds[n] for n in names[:3]), "scoring": timers.seconds["score_text"],
                 "training": timers.seconds["train_on_text"]}
        parts["other"] = total - sum(parts.values())
        rows.append({"document": doc["id"], "total s": total, **{f"{p} %": 100 * s / total for p, s in parts.items()}})
        print(rows[-1], flush=True)
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "document"}
    return {"rows": rows, "mean": mean, "k": config.k, "model": config.model,
            "goal": "restore < 2 %, everything but training < 15 % at k = 50"}


# ------------------------------------------------------------------------------------------------- embed
@torch.no_grad()
def encode_in_input_order(embedder, texts: list[str], max_tokens: int | None, batch_size: int = 16) -> np.ndarray:
    """The same pooling without sorting by length: each batch pads to its longest text, as a plain loop does."""
    out = []
    for start in range(0, len(texts), batch_size):
        batch = embedder.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                   max_length=embedder.max_tokens(max_tokens), return_tensors="pt")
        hidden = embedder.model(**batch.to(embedder.device)).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        if embedder.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        out.append(pooled.cpu().numpy())
    return np.concatenate(out)


def section_embed(args) -> dict:
    """Chunks per second of the index build's encoder against input-order batches and SentenceTransformer.encode.
    The three are timed in turn, `--embed-rounds` rounds, and each keeps its best round: this VM's speed drifts by
    up to a fifth between minutes, which one pass in a fixed order would credit to whichever ran at a fast moment."""
    from ttt_core.study import prepare

    config = study_config(args.params, device=args.device)
    study = prepare(config, progress=False)
    rng = np.random.default_rng(0)
    rows = rng.permutation(study.corpus.rows("train"))[:args.embed_chunks]
    texts = study.corpus.dataset.select(rows.tolist())["text"]
    embedder = study.embedder
    encoders = {"sorted": lambda: embedder.encode(texts, config.embed_max_tokens),
                "input-order": lambda: encode_in_input_order(embedder, texts, config.embed_max_tokens)}
    if args.sentence_transformers:
        # Not a dependency of the study, so not in its environment: a folder from `pip install --no-deps --target
        # DIR sentence-transformers` is put on the path only now.
        sys.path.append(str(args.sentence_transformers))
    result = {"embedder": config.embedder, "chunks": len(texts), "rounds": args.embed_rounds}
    try:  # the library a reader would otherwise use, where available (it sorts by length too)
        from sentence_transformers import SentenceTransformer

        from ttt_core.models import assemble_packaged

        folder, _ = assemble_packaged(config.embedder, config.work_path / "models")
        model = SentenceTransformer(str(folder), device=str(embedder.device))
        model.max_seq_length = embedder.max_tokens(config.embed_max_tokens)
        encoders["SentenceTransformer"] = lambda: model.encode(texts, batch_size=16,
                                                               normalize_embeddings=embedder.normalize)
    except Exception as missing:  # noqa: BLE001 - reported, not hidden
        result["SentenceTransformer"] = f"not measured: {type(missing).__name__}: {missing}"[:200]
    embedder.encode(texts[:16], config.embed_max_tokens)  # warm-up (each encoder's first round is one too)
    best, vectors = {name: float("inf") for name in encoders}, {}
    for _ in range(args.embed_rounds):
        for name, encode in encoders.items():
            start = time.perf_counter()
            vectors[name] = encode()
            best[name] = min(best[name], time.perf_counter() - start)
    result.update({"sorted chunks/s": len(texts) / best["sorted"],
                   "input-order chunks/s": len(texts) / best["input-order"],
                   "speed-up": best["input-order"] / best["sorted"],
                   "max abs difference": float(np.abs(vectors["sorted"] - vectors["input-order"]).max())})
    if "SentenceTransformer" in vectors:
        result["SentenceTransformer chunks/s"] = len(texts) / best["SentenceTransformer"]
        result["ours / SentenceTransformer"] = best["SentenceTransformer"] / best["sorted"]
        result["max abs difference from SentenceTransformer"] = float(
            np.abs(vectors["sorted"] - vectors["SentenceTransformer"]).max())
    result["goal"] = ("the index build's encoder at least as fast as SentenceTransformer.encode on the same chunks, "
                      "vectors equal")
    print(result, flush=True)
    return result


# --------------------------------------------------------------------------------------------- retrievers
def section_retrievers(args) -> dict:
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


# --------------------------------------------------------------------------------------------- retrieval
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


def section_retrieval(args) -> dict:
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


# ------------------------------------------------------------------------------------------------ memory
def memory_child(args) -> None:
    """One process, one model and optimizer: TTT-NN on `--docs` documents; prints a JSON line with its peak RSS."""
    import resource

    from ttt_core.metrics import bits_per_byte
    from ttt_core.study import prepare
    from ttt_core.ttt import test_time_train

    model, variant = args.memory_child
    optimizer, _, snapshot = variant.partition("-")
    config = study_config(args.params, model=model, optimizer=optimizer, k=args.memory_k, device=args.device,
                          weights_snapshot=snapshot or "memory")
    study = prepare(config, progress=False)
    lm = study.language_model()
    # Weights, their snapshot in memory (restored after each document) and gradients, 4 bytes each, plus AdamW's
    # two moments: where that alone passes the machine's memory (no swap here) the run is recorded, not attempted,
    # since it would only end in the kernel's out-of-memory killer after minutes of thrashing.
    parts = ["weights", "gradients"] + (["snapshot"] if config.weights_snapshot == "memory" else []) + (
        ["AdamW moments", "AdamW moments"] if optimizer == "adamw" else [])
    needed = lm.n_params * 4 * len(parts) / 1e9
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    if lm.device.type == "cpu" and needed > 0.95 * total:
        print("RESULT " + json.dumps({"k": config.k, "failed": f"not attempted: {', '.join(dict.fromkeys(parts))} "
                                      f"alone need {needed:.1f} GB, the machine has {total:.1f} GB"}), flush=True)
        return
    documents = []
    start = time.perf_counter()
    for doc in protocol_documents(study, args.docs):
        row = test_time_train(lm, doc, study.training_texts(doc), config)
        first, last = row["evals"][0], row["evals"][-1]
        documents.append({"id": doc["id"], "before": bits_per_byte(first["loglik"], row["n_bytes"]),
                          "after": bits_per_byte(last["loglik"], row["n_bytes"])})
    print("RESULT " + json.dumps({"k": config.k,
                                  "seconds": time.perf_counter() - start,
                                  "peak RSS GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                                  "documents": documents}), flush=True)


MEMORY_VARIANTS = {"adamw": "AdamW", "adafactor": "Adafactor",
                   "adafactor-file": "Adafactor, weights restored from the model's file"}


def section_memory(args) -> dict:
    """Each (model, variant) in its own process. Runs of earlier invocations for the other pairs are kept, so a
    single pair (the 1.5B model, say) can be measured again without repeating the rest."""
    previous = json.loads(args.results.read_text()).get("memory", {}).get("result", {}) if args.results.exists() else {}
    runs = {(r["model"], r["variant"]): r for r in previous.get("_runs", [])}
    for model in args.memory_models:
        for variant in args.memory_variants:
            command = [sys.executable, str(Path(__file__)), "--memory-child", model, variant, "--docs",
                       str(args.docs), "--memory-k", str(args.memory_k), "--params", str(args.params),
                       "--device", args.device]
            runs[model, variant] = {"model": model, "variant": variant, "measured by": invocation(),
                                    "date": datetime.date.today().isoformat(), **run_child(command)}
            print({k: v for k, v in runs[model, variant].items() if k != "documents"}, flush=True)
    rows, effects = [], []
    for run in runs.values():
        docs = run.get("documents", [])
        rows.append({"model": run["model"], "optimizer": MEMORY_VARIANTS[run["variant"]], "k": run.get("k", ""),
                     "documents": run.get("n_documents", len(docs)), "peak RSS GB": run.get("peak RSS GB", float("nan")),
                     "seconds": run.get("seconds", float("nan")),
                     "mean change %": float(np.mean([100 * (d["after"] - d["before"]) / d["before"] for d in docs]))
                     if docs else run.get("mean change %", float("nan")), "failed": failure_reason(run.get("failed", ""))})
    for model in dict.fromkeys(r["model"] for r in runs.values()):
        pair = {variant: {d["id"]: d["after"] for d in runs[model, variant].get("documents", [])}
                for variant in ("adamw", "adafactor") if (model, variant) in runs}
        if len(pair) == 2 and pair["adamw"] and pair["adafactor"]:
            diffs = [100 * (pair["adafactor"][d] - pair["adamw"][d]) / pair["adamw"][d] for d in pair["adamw"]]
            effects.append({"model": model, "documents": len(diffs),
                            "Adafactor vs AdamW after TTT-NN, mean % per document": float(np.mean(diffs)),
                            "min %": float(np.min(diffs)), "max %": float(np.max(diffs))})
    measured = {e["model"] for e in effects}  # an earlier invocation's effect stays for the models not paired now
    effects += [e for e in previous.get("optimizer effect", []) if e["model"] not in measured]
    commands = list(dict.fromkeys((r.get("measured by", "?"), r.get("date", "?")) for r in runs.values()))
    for row, run in zip(rows, runs.values()):
        row["run"] = 1 + commands.index((run.get("measured by", "?"), run.get("date", "?")))
    return {"rows": rows, "optimizer effect": effects, "_runs": list(runs.values()),
            "runs": [{"run": i + 1, "command": c, "date": d} for i, (c, d) in enumerate(commands)],
            "note": "peak RSS counts the pages of the model's file that safetensors maps (7.1 GB for the 1.5B model): "
                    "page cache the kernel can reclaim, so it overstates what the file-restored run needs",
            "goal": "train Qwen2.5-Coder-1.5B in 24 GB with a cheaper optimizer state; its effect on bits per byte"}


def invocation() -> str:
    """This invocation's command line, as the report shows it."""
    return "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])


def earlier_runs(section: dict, models: set) -> list[dict]:
    """The commands of earlier invocations whose rows a section keeps (for `models`), with their dates."""
    if not models or "command" not in section:
        return []
    earlier = [r for r in section.get("result", {}).get("earlier runs kept", []) if set(r["models"].split(", ")) & models]
    return earlier + [{"command": section["command"], "date": section["date"], "models": ", ".join(sorted(models))}]


# ---------------------------------------------------------------------------------------------- speedups
def emulate_before() -> None:
    """Patch `ttt_core.ttt` back to the code before the performance changes (commit 8d3f712): large tensors from
    glibc's default allocator (fresh mmap()s) and the optimizer state dropped after every document (a new one
    allocated for the next)."""
    import contextlib

    from ttt_core import ttt

    def apply_gradient(model, optimizer, grad_clip):
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def reset_optimizer(optimizer):
        optimizer.state.clear()
    ttt.apply_gradient, ttt.reset_optimizer, ttt.heap_allocation = apply_gradient, reset_optimizer, contextlib.nullcontext


def speedup_child(args) -> None:
    """One process, one variant: TTT-NN on `--docs` documents with one optimizer for the run, as `run_ttt`;
    prints a JSON line with the seconds of the first and of the other documents and every log-likelihood."""
    from ttt_core import ttt
    from ttt_core.study import prepare

    model, variant = args.speedup_child
    if variant == "before":
        emulate_before()
    config = study_config(args.params, model=model, k=args.speedup_k, device=args.device)
    study = prepare(config, progress=False)
    lm = study.language_model()
    if variant == "compiled":  # inductor, shapes dynamic so that every neighbour length reuses one graph
        # Inductor's C++ build imports distutils; setuptools' replacement of it fails with "AssertionError:
        # .../distutils/core.py" when the standard one was imported first (pytorch/pytorch#143288): use the standard one.
        os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")
        lm.model.forward = torch.compile(lm.model.forward, dynamic=True)
    optimizer = ttt.make_optimizer(lm.model, config)
    seconds, logliks = [], []
    for doc in protocol_documents(study, args.docs):
        neighbors = study.training_texts(doc)
        start = time.perf_counter()
        row = ttt.test_time_train(lm, doc, neighbors, config, optimizer)
        seconds.append(time.perf_counter() - start)
        logliks.append([e["loglik"] for e in row["evals"]])
    print("RESULT " + json.dumps({"seconds": seconds, "logliks": logliks}), flush=True)


def section_speedups(args) -> dict:
    """The kept changes (and the tried ones) against the code before them, each in a fresh process on the same
    documents: wall time of the documents after the first (the first pays compilation and warm-up) and the
    largest relative difference of any log-likelihood from the code before."""
    rows = []
    for model in args.speedup_models:
        runs = {}
        for variant in args.speedup_variants:
            command = [sys.executable, str(Path(__file__)), "--speedup-child", model, variant, "--docs",
                       str(args.speedup_docs),
                       "--speedup-k", str(args.speedup_k), "--params", str(args.params), "--device", args.device]
            runs[variant] = run_child(command)
            print(variant, runs[variant], flush=True)
        before = runs.get("before", {})
        for variant, run in runs.items():
            if "failed" in run:
                rows.append({"model": model, "variant": variant, "failed": failure_reason(run["failed"])})
                continue
            rest = sum(run["seconds"][1:]) or sum(run["seconds"])
            row = {"model": model, "variant": variant, "documents": len(run["seconds"]), "k": args.speedup_k,
                   "first document s": run["seconds"][0], "other documents s": rest}
            if "seconds" in before:
                base = sum(before["seconds"][1:]) or sum(before["seconds"])
                row["speed-up"] = base / rest
                row["max relative loglik difference"] = max(
                    abs(a - b) / abs(b) for ours, theirs in zip(run["logliks"], before["logliks"])
                    for a, b in zip(ours, theirs))
            rows.append(row)
    # The models not measured now keep an earlier invocation's rows (each model's rows are against its own "before").
    section = json.loads(args.results.read_text()).get("speedups", {}) if args.results.exists() else {}
    kept = [r for r in section.get("result", {}).get("rows", []) if r["model"] not in args.speedup_models]
    return {"rows": kept + rows, "earlier runs kept": earlier_runs(section, {r["model"] for r in kept}), "goal": "each kept change: bits per byte equal to the code before to 1e-6 relative, "
                                  "its speed-up as a ratio"}


# ----------------------------------------------------------------------------------------------- threads
def threads_child(args) -> None:
    """One process: the best training-step time of `--threads-model` at its typical neighbour length."""
    from ttt_core.study import prepare

    config = study_config(args.params, model=args.threads_model, device=args.device)
    study = prepare(config, progress=False)
    tokens = typical_neighbor_tokens(study)
    lm = study.language_model()
    if args.threads_barrier:  # start timing only when every process has loaded, so all of them run at once
        barrier = Path(args.threads_barrier)
        (barrier / str(os.getpid())).touch()
        while len(list(barrier.iterdir())) < args.threads_processes:
            time.sleep(0.05)
    print("RESULT " + json.dumps({"threads": torch.get_num_threads(), "tokens": tokens,
                                  "step s": time_training_step(lm, tokens, args.repeats)}),
          flush=True)


def section_threads(args) -> dict:
    """Steps per second of the whole machine: one process with all cores, then one single-threaded process per
    core at once (the documents of a run are independent, so either could run them)."""
    import subprocess

    cores = os.cpu_count() or 1
    command = [sys.executable, str(Path(__file__)), "--threads-child", "--threads-model", args.threads_model,
               "--repeats", str(args.repeats), "--params", str(args.params), "--device", args.device]

    def run(threads: int, processes: int) -> list[dict]:
        import tempfile

        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        with tempfile.TemporaryDirectory() as barrier:
            extra = ["--threads-barrier", barrier, "--threads-processes", str(processes)]
            children = [subprocess.Popen(command + extra, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True) for _ in range(processes)]
            results = [child_result(*child.communicate(), child.returncode) for child in children]
        failed = [r["failed"] for r in results if "failed" in r]
        if failed:
            raise RuntimeError(f"a threads child failed: {failed[0]}")
        return results

    rows = []
    for threads, processes in ((cores, 1), (1, cores)):
        results = run(threads, processes)
        rows.append({"model": args.threads_model, "processes": processes, "threads each": threads,
                     "tokens": results[0]["tokens"], "step s (each)": float(np.mean([r["step s"] for r in results])),
                     "steps/s of the machine": sum(1 / r["step s"] for r in results)})
        print(rows[-1], flush=True)
    for row in rows:
        row["throughput ratio"] = row["steps/s of the machine"] / rows[0]["steps/s of the machine"]
    return {"rows": rows, "goal": "the thread setting that gives the machine the most training steps per second"}


# ---------------------------------------------------------------------------------------------- report
def table(rows: list[dict], digits: int = 3) -> str:
    if not rows:
        return "(none)\n"
    keys = list(dict.fromkeys(k for r in rows for k in r))  # every row's columns (a failed run has "failed")

    def cell(v):  # one line, pipes escaped: a cell never breaks the table
        return f"{v:.{digits}g}" if isinstance(v, float) else " ".join(str(v).split()).replace("|", "\\|")
    return ("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
            + "".join("| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |\n" for r in rows))


def render(results: dict) -> str:
    out = ["# Benchmarks\n", "Measured by `benchmarks/run.py` (every figure a ratio taken in one process on one "
           "machine; speed goals are measured here, never asserted in tests).\n"]
    for name in SECTIONS:
        if name not in results:
            out.append(f"## {name}\n\nNot measured yet: `python benchmarks/run.py --only {name}`.\n")
            continue
        r = results[name]
        out.append(f"## {name}\n\n`{r['command']}` on {r['date']}; machine: "
                   + ", ".join(f"{k} {v}" for k, v in r["machine"].items()) + f".\n\nGoal: {r['result'].get('goal', '')}.\n")
        body = r["result"]
        if "rows" in body:
            out.append(table(body["rows"]))
        # Lists of rows and single rows (a dict, e.g. a mean) each get a table of their own under their name.
        body = {k: v for k, v in body.items() if not k.startswith("_")}  # "_..." keeps raw data, not shown
        tables = {k: ([v] if isinstance(v, dict) else v) for k, v in body.items() if k != "rows" and v and (
            isinstance(v, dict) or (isinstance(v, list) and all(isinstance(x, dict) for x in v)))}
        for key, rows in tables.items():
            out.append(f"{key[:1].upper()}{key[1:]}:\n\n" + table(rows))
        summary = {k: v for k, v in body.items() if k not in ("rows", "goal", *tables)}
        if summary:
            out.append(table([summary]))
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--params", type=Path, default=ROOT / "params" / "study.yml")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--docs", type=int, default=3, help="test documents of the protocol and overheads sections")
    parser.add_argument("--long-docs", type=int, default=1, help="whole-source documents of the protocol section")
    parser.add_argument("--long-bytes", type=int, default=16_000, help="bytes of a whole-source document")
    parser.add_argument("--score-bytes", type=int, nargs="+", default=[1_000, 4_000, 16_000, 64_000],
                        help="document sizes at which the protocol section times one scoring pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--embed-chunks", type=int, default=512)
    parser.add_argument("--embed-rounds", type=int, default=2)
    parser.add_argument("--sentence-transformers", type=Path, metavar="DIR",
                        help="a folder holding sentence-transformers (pip install --no-deps --target DIR "
                             "sentence-transformers), for the embed section's comparison")
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384, help="the embedder's dimension (MiniLM: 384)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cluster-noise", type=float, nargs="+", default=[0.35, 1.0],
                        help="spreads of the synthetic clusters (retrieval): well separated, and overlapping")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory-models", nargs="*", default=["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b",
                                                                  "qwen2.5-coder-1.5b"])
    parser.add_argument("--memory-k", type=int, default=10)
    parser.add_argument("--memory-variants", nargs="+", choices=list(MEMORY_VARIANTS),
                        default=["adamw", "adafactor", "adafactor-file"])
    parser.add_argument("--speedup-models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--speedup-variants", nargs="+", default=["before", "after", "compiled"],
                        help="before: the code before the performance changes (emulated); after: the code as it "
                             "is; compiled: as it is, with torch.compile of the model's forward")
    parser.add_argument("--speedup-k", type=int, default=10)
    parser.add_argument("--speedup-docs", type=int, default=3, help="documents per variant (the first is warm-up)")
    parser.add_argument("--speedup-child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--threads-model", default="smollm2-135m")
    parser.add_argument("--threads-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads-barrier", help=argparse.SUPPRESS)
    parser.add_argument("--threads-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the code paths, not the machine")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args)
    if args.speedup_child:
        return speedup_child(args)
    if args.threads_child:
        return threads_child(args)
    if args.quick:
        args.k, args.docs, args.repeats, args.embed_chunks, args.vectors, args.queries = 3, 1, 1, 32, 20_000, 20
        args.long_bytes, args.score_bytes = 3000, [1000, 3000]
        args.models, args.memory_models, args.memory_k = args.models[:1], args.memory_models[:1], 2
        args.speedup_models, args.speedup_k, args.speedup_docs = args.speedup_models[:1], 2, 2
    for name in args.only:
        print(f"== {name}", flush=True)
        result = globals()[f"section_{name}"](args)
        # Read again now: another invocation may have finished a section while this one ran.
        results = json.loads(args.results.read_text()) if args.results.exists() else {}
        results[name] = {"result": result, "machine": machine(), "date": datetime.date.today().isoformat(),
                         "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + (argv or sys.argv[1:]))}
        args.results.write_text(json.dumps(results, indent=1, default=float))  # a finished section is kept
        args.results.with_suffix(".md").write_text(render(results))


if __name__ == "__main__":
    main()
