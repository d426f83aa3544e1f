"""The embed section: the index build's embedding throughput.

Chunks per second (chunks/s) of the study's encoder (length-sorted batches) on `--embed-chunks` train chunks, against
input-order batches and against SentenceTransformer.encode (with --sentence-transformers DIR: it is kept out of the
study's environment), as ratios of their times, with the largest absolute difference of the vectors."""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from common import study_config


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


def run(args) -> dict:
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
