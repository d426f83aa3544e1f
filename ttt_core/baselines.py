"""The paper's baselines beside TTT-NN (PAPER.md section 6), each scored with the same bits per byte:

- in-context: the neighbours before the document in the model's context, only the document's tokens scored;
  by default the neighbours *nearest* the query are the ones kept when they do not all fit (the official code
  kept the tail of the concatenation, i.e. the farthest neighbours' ends: `keep="official"`), beside the same
  number of random chunks of the document's domain as its control, and the neighbours' overlap with the document;
- dynamic evaluation: train on the document's own first part (the split protocol's query) and score the rest;
- interpolation: a unigram distribution over the neighbours' tokens, weighted by softmax(-distance), mixed
  with the model's next-token distribution with weight alpha chosen on held-out documents (the official code
  chose it on the reported documents themselves: `choose_alpha` refuses to).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .metrics import rolling_windows
from .retrieve import random_neighbors
from .ttt import reset_optimizer, reset_weights, snapshot_weights, split_query_and_scored, train_on_text

# Bump when code here changes what a baseline row would be (in-context, interpolation, dynamic evaluation): it is
# part of the baselines' results file name (`baselines_key`), as METHOD_VERSION is of a TTT-NN run's.
BASELINES_VERSION = 1
ALPHA_GRID = tuple(round(0.01 * i, 2) for i in range(20))  # the paper's 0.00, 0.01, ..., 0.19
IN_CONTEXT_KEEP = ("nearest", "official")


# ------------------------------------------------------------------------------------------- in-context
def in_context_prefix(neighbor_tokens: list[list[int]], budget: int, keep: str = "nearest") -> list[int]:
    """The context put before the document, at most `budget` tokens, from neighbours given nearest first.

    keep="nearest": whole neighbours nearest first while they fit, the last one cut from its start; they are
    placed farthest first so the nearest sits next to the document. keep="official": the official code's
    concatenation nearest first, left-truncated, so what remains is the tail (the farthest neighbours' ends)."""
    if keep not in IN_CONTEXT_KEEP:
        raise ValueError(f"invalid keep={keep!r}: expected one of {list(IN_CONTEXT_KEEP)}")
    if budget <= 0:
        return []
    if keep == "official":
        joined = [t for tokens in neighbor_tokens for t in tokens]
        return joined[-budget:]
    kept, left = [], budget
    for tokens in neighbor_tokens:
        if left <= 0:
            break
        kept.append(tokens[-left:] if len(tokens) > left else tokens)
        left -= len(kept[-1])
    return [t for tokens in reversed(kept) for t in tokens]


@torch.no_grad()
def target_logprobs(model, tokens: list[int], prefix_token: int, max_len: int,
                    context: list[int] | None = None) -> np.ndarray:
    """Natural-log probability of every token of `tokens`, each scored once: after `context` in one window when
    both fit (in-context), else lm-eval's rolling windows from `prefix_token` (the study's bits per byte)."""
    model.eval()
    device = next(model.parameters()).device
    if context and len(context) + len(tokens) <= max_len:
        windows = [(context, tokens)]
    else:
        windows = rolling_windows(tokens, prefix_token, max_len)
    out = []
    for ctx, targets in windows:
        inputs = (ctx + targets)[:-1]
        logits = model(input_ids=torch.tensor([inputs], device=device)).logits[0, -len(targets):]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        out.append(logprobs.gather(1, torch.tensor(targets, device=device)[:, None])[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def in_context(lm, text: str, neighbor_texts: list[str], context: int | None = None, keep: str = "nearest") -> dict:
    """Log-likelihood of `text` with its neighbours (nearest first) in a context of `context` tokens (default:
    the model's); a document longer than the context is scored without neighbours, as the official code did."""
    window = min(context or lm.context_length, lm.context_length)
    tokens = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    neighbor_tokens = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in neighbor_texts]
    # The document's first token needs one token before it: the context, else the scoring prefix.
    prefix = in_context_prefix(neighbor_tokens, window - len(tokens), keep) if len(tokens) < window else []
    logprobs = target_logprobs(lm.model, tokens, lm.prefix_token_id, window, prefix)
    return {"loglik": float(logprobs.sum()), "n_tokens": len(tokens), "n_bytes": len(text.encode("utf-8")),
            "context_tokens": len(prefix)}


# ------------------------------------------------------------------------------------- dynamic evaluation
def dynamic_evaluation(lm, text: str, config, steps: tuple[int, ...] = (0, 1, 2, 5, 10, 20),
                       optimizer_factory=None) -> dict:
    """Train on the document's first part (the split protocol's query: min(1024, n/2) tokens) and score the
    rest after each number of steps in `steps`; the weights are restored afterwards. No scored token is ever
    trained on: the scored text starts where the trained text ends."""
    from .metrics import score_text
    from .ttt import make_optimizer

    trained, scored = split_query_and_scored(lm.tokenizer, text)
    snapshot = snapshot_weights(lm.model)
    optimizer = (optimizer_factory or make_optimizer)(lm.model, config)
    evals, taken = [], 0
    try:
        for target in sorted(set(steps)):
            while taken < target:
                train_on_text(lm, trained, optimizer, config)
                taken += 1
            score = score_text(lm, scored, config.eval_context, config.max_eval_tokens)
            evals.append({"steps": target, "loglik": score["loglik"], "n_bytes": score["n_bytes"]})
    finally:
        reset_weights(lm.model, snapshot)
        reset_optimizer(optimizer)
    return {"trained": trained, "scored": scored, "evals": evals}


# ------------------------------------------------------------------------------------------ interpolation
def unigram_distribution(neighbor_tokens: list[list[int]], distances, vocab_size: int) -> np.ndarray:
    """p_knn: each neighbour's token histogram (normalised), weighted by softmax(-distance) and summed; the same
    distribution at every position of the document."""
    weights = np.exp(-(np.asarray(distances, dtype=float) - np.min(distances)))
    weights /= weights.sum()
    p = np.zeros(vocab_size)
    for w, tokens in zip(weights, neighbor_tokens):
        if tokens:
            p += w * np.bincount(tokens, minlength=vocab_size)[:vocab_size] / len(tokens)
    return p / p.sum() if p.sum() > 0 else p


def interpolated_loglik(logprobs: np.ndarray, targets: list[int], p_knn: np.ndarray, alpha: float) -> float:
    """Sum over tokens of log(alpha * p_knn(y) + (1 - alpha) * p_LM(y))."""
    if alpha == 0:
        return float(np.sum(logprobs))
    mixed = alpha * p_knn[np.asarray(targets)] + (1 - alpha) * np.exp(logprobs)
    return float(np.sum(np.log(mixed)))


def choose_alpha(tuning: list[dict], evaluated_ids=(), grid=ALPHA_GRID) -> float:
    """The alpha of `grid` with the lowest bits per byte over the tuning documents (each a dict with id,
    logprobs, targets, p_knn, n_bytes). Documents that are reported may not tune it: an overlap is an error."""
    overlap = {d["id"] for d in tuning} & set(evaluated_ids)
    if overlap:
        raise ValueError(f"alpha would be chosen on {len(overlap)} of the documents it is reported on "
                         f"(for example {sorted(overlap)[0]!r}): tune it on held-out documents")
    if not tuning:
        raise ValueError("choose_alpha needs at least one held-out tuning document")

    def bits(alpha):
        return -sum(interpolated_loglik(d["logprobs"], d["targets"], d["p_knn"], alpha) for d in tuning) / \
            sum(d["n_bytes"] for d in tuning) / math.log(2)
    return min(grid, key=bits)


def cross_fitted_alphas(documents: list[dict], groups: dict, grid=ALPHA_GRID) -> dict:
    """Alpha for each document chosen on the *other* documents outside its content group (leave one group out):
    no document's own tokens ever choose the alpha it is scored with, and no extra documents need scoring.
    `documents` as `choose_alpha` takes them; `groups` maps a document id to its content group."""
    alphas = {}
    for d in documents:
        tuning = [t for t in documents if groups[t["id"]] != groups[d["id"]]]
        alphas[d["id"]] = choose_alpha(tuning, evaluated_ids=[d["id"]], grid=grid)
    return alphas


# ----------------------------------------------------------------------------------------- per-document runs
def interpolation_inputs(row: dict) -> dict:
    """A stored row as `choose_alpha` takes it: p_knn is kept per scored token, so it is indexed by position."""
    n = len(row["token_logprobs"])
    return {"id": row["doc_id"], "logprobs": np.asarray(row["token_logprobs"]), "targets": list(range(n)),
            "p_knn": np.asarray(row["knn_probs"]), "n_bytes": row["n_bytes"]}


def baseline_row(study, document: dict, contexts=(None, 1024), keeps=IN_CONTEXT_KEEP, full: bool = True) -> dict:
    """Every baseline of one document, on the k nearest neighbours TTT-NN trains on (equal k):

    - `loglik`, `token_logprobs`: the document scored alone (k = 0), each token's log-probability;
    - `knn_probs`: p_knn of each scored token (the neighbours' unigram mixture, for interpolation at any alpha);
    - `in_context` (with `full`): one entry per context size (None: the model's) and truncation rule;
    - `dynamic` (with `full`): trained on the document's first part, the rest scored after each k of the grid.
    Seconds are wall times of each method on this machine."""
    import time

    lm, config = study.language_model(), study.config
    neighbors = study.training_texts(document)
    tokens = lm.tokenizer(document["text"], add_special_tokens=False)["input_ids"]
    window = min(config.eval_context or lm.context_length, lm.context_length)
    start = time.perf_counter()
    logprobs = target_logprobs(lm.model, tokens, lm.prefix_token_id, window)
    score_seconds = time.perf_counter() - start
    neighbor_tokens = [lm.tokenizer(n.text, add_special_tokens=False)["input_ids"] for n in neighbors]
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    p_knn = unigram_distribution(neighbor_tokens, [n.distance for n in neighbors], vocab) if neighbors else np.zeros(vocab)
    row = {"doc_id": document["id"], "domain": document["domain"], "pile_set_name": document["pile_set_name"],
           "group": document.get("group", document["id"]), "source_id": document.get("source_id", document["id"]),
           "n_bytes": len(document["text"].encode("utf-8")), "n_tokens": len(tokens),
           "loglik": float(logprobs.sum()), "score_seconds": score_seconds,
           "token_logprobs": logprobs.tolist(), "knn_probs": p_knn[np.asarray(tokens, dtype=int)].tolist(),
           "neighbors": [n.doc_id for n in neighbors]}
    if not full:
        return row
    row["in_context"] = []
    for context in contexts:
        for keep in keeps:
            start = time.perf_counter()
            scored = in_context(lm, document["text"], [n.text for n in neighbors], context, keep)
            row["in_context"].append({"context": context or lm.context_length, "keep": keep, "neighbors": "nearest",
                                      "loglik": scored["loglik"], "context_tokens": scored["context_tokens"],
                                      "seconds": time.perf_counter() - start})
    # The control for in-context's gain: as many random chunks of the document's domain in the same context. What
    # the nearest neighbours add beyond it is retrieval's; their overlap with the document says whether it is copied.
    start = time.perf_counter()
    randoms = random_neighbors(document, len(neighbors), "random-domain", study.index, study.corpus, config.seed)
    scored = in_context(lm, document["text"], [n.text for n in randoms], contexts[0], keeps[0])
    row["in_context"].append({"context": contexts[0] or lm.context_length, "keep": keeps[0],
                              "neighbors": "random-domain", "ids": [n.doc_id for n in randoms],
                              "loglik": scored["loglik"],
                              "context_tokens": scored["context_tokens"], "seconds": time.perf_counter() - start})
    row["overlap"] = {name: text_overlap(document["text"], [n.text for n in chosen], config.decontam_ngram)
                      for name, chosen in (("nearest", neighbors), ("random-domain", randoms))}
    start = time.perf_counter()
    dynamic = dynamic_evaluation(lm, document["text"], config, steps=config.ks)
    row["dynamic"] = {"scored_bytes": dynamic["evals"][0]["n_bytes"], "seconds": time.perf_counter() - start,
                      "evals": [{"k": e["steps"], "loglik": e["loglik"]} for e in dynamic["evals"]]}
    return row


def text_overlap(text: str, others: list[str], n: int) -> dict:
    """How much of `text` the `others` contain: the share of its n-character n-grams found in them and the longest
    substring it shares with any of them (characters); copying in context needs long shared spans."""
    from difflib import SequenceMatcher

    from .decontaminate import document_overlap

    longest = max((SequenceMatcher(None, text, other, autojunk=False).find_longest_match().size for other in others),
                  default=0)
    return {"ngram_share": document_overlap(text, others, n), "longest_shared_chars": longest}


def baseline_settings(study, contexts=(None, 1024), keeps=IN_CONTEXT_KEEP, full: bool = True) -> dict:
    """What a baseline row depends on: the run's inputs (configuration and content, `Study.result_inputs`), the
    baseline settings and BASELINES_VERSION."""
    return {"run": study.result_inputs(), "contexts": list(contexts), "keeps": list(keeps), "full": full,
            "in_context_control": "random-domain", "baselines_version": BASELINES_VERSION}


def baselines_key(study, contexts=(None, 1024), keeps=IN_CONTEXT_KEEP, full: bool = True) -> str:
    """The results file's name: 'baselines-' and a hash of the run's inputs and the baseline settings."""
    import hashlib
    import json

    text = json.dumps(baseline_settings(study, contexts, keeps, full), sort_keys=True)
    return "baselines-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def documents_frame(rows: list[dict], logliks, n_bytes=None):
    """A `metrics.documents_at`-shaped frame (index doc_id: domain, group, loglik, n_bytes, bpb) from baseline
    rows and one log-likelihood per row; `n_bytes` are the scored bytes (default: the whole document's)."""
    import pandas as pd

    frame = pd.DataFrame({"domain": [r["domain"] for r in rows], "group": [r["group"] for r in rows],
                          "loglik": list(logliks), "n_bytes": list(n_bytes or [r["n_bytes"] for r in rows])},
                         index=pd.Index([r["doc_id"] for r in rows], name="doc_id"))
    return frame.assign(bpb=-frame["loglik"] / frame["n_bytes"] / math.log(2))


def run_baselines(study, documents: list[dict], contexts=(None, 1024), keeps=IN_CONTEXT_KEEP, full: bool = True,
                  progress: bool = True) -> list[dict]:
    """`baseline_row` for every document, each appended to a results file the moment it is done (named by the
    run's key and the baseline settings), so a killed run resumes where it stopped."""
    import json

    from tqdm import tqdm

    from .results import ResultsStore

    settings = baseline_settings(study, contexts, keeps, full)
    path = study.results_path.parent / f"{baselines_key(study, contexts, keeps, full)}.jsonl"
    store = ResultsStore(path)
    path.with_suffix(".config.json").write_text(json.dumps(settings, indent=1))
    pending = [d for d in documents if d["id"] not in store]
    for document in tqdm(pending, desc="baselines", unit="doc", disable=not progress):
        store.append(baseline_row(study, document, contexts, keeps, full))
    return [store.rows[d["id"]] for d in documents]
