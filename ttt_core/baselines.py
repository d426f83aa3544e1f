"""The paper's baselines beside TTT-NN (the official code, socialfoundations/tttlm @ 99d4e0a: in-context
`code/baseline_context.py`, interpolation `code/baseline_interpolation.py`, dynamic evaluation
`code/eval_tttlm.py --dynamic_eval --split_text`), each scored with the same bits per byte:

- in-context: the scoring prefix, the neighbours each ending with EOS, then the document in the model's context
  (the official code's plain concatenation: `join="official"`), only the document's tokens scored;
  by default the neighbours *nearest* the query are the ones kept when they do not all fit (the official code
  kept the tail of the concatenation, i.e. the farthest neighbours' ends: `keep="official"`), beside the same
  number of random chunks of the document's domain as its control, and the neighbours' overlap with the document;
- dynamic evaluation: train on the document's own first part (the split protocol's query) and score the rest;
- interpolation: a unigram distribution over the neighbours' tokens, weighted by softmax(-distance), mixed
  with the model's next-token distribution with weight alpha chosen on held-out documents (the official code
  chose it on the reported documents themselves: `choose_alpha` refuses to).
"""
from __future__ import annotations

import numpy as np

from .metrics import bits_per_byte, loglikelihood_rolling, scored_tokens, token_logprobs
from .retrieve import random_neighbors
from .ttt import loaded_weights, restored_after, split_query_and_scored, train_on_text

ALPHA_GRID = tuple(round(0.01 * i, 2) for i in range(20))  # the paper's 0.00, 0.01, ..., 0.19
IN_CONTEXT_KEEP = ("nearest", "official")
IN_CONTEXT_JOIN = ("eos", "official")  # how neighbours and document are joined (`in_context`)
# Part of the baseline rows' key (`baseline_settings`): bumped whenever a baseline row's numbers change.
#   1: the first rows (in-context as the official plain concatenation of neighbours and document; the bytes of a
#      capped text counted from its decoded cut).
#   2: in-context joined as scoring prefix + neighbours each ending with EOS + document (join="eos"; the official
#      concatenation is join="official"); a capped text's bytes are those of its scored tokens.
BASELINES_VERSION = 2


# ------------------------------------------------------------------------------------------- in-context
def in_context_prefix(neighbor_tokens: list[list[int]], budget: int, keep: str = "nearest",
                      separator: int | None = None) -> list[int]:
    """The neighbours put before the document, at most `budget` tokens, from neighbours given nearest first;
    with `separator` (EOS) each non-empty neighbour is followed by it, counted in the budget.

    keep="nearest": whole neighbours nearest first while they fit, the last one cut from its start (keeping its
    separator, and left out when only the separator would fit); they are placed farthest first so the nearest
    sits next to the document. keep="official": the official code's concatenation nearest first,
    left-truncated, so what remains is the tail (the farthest neighbours' ends)."""
    if keep not in IN_CONTEXT_KEEP:
        raise ValueError(f"invalid keep={keep!r}: expected one of {list(IN_CONTEXT_KEEP)}")
    if separator is not None:
        neighbor_tokens = [tokens + [separator] for tokens in neighbor_tokens if tokens]
    if budget <= 0:
        return []
    if keep == "official":
        joined = [t for tokens in neighbor_tokens for t in tokens]
        return joined[-budget:]
    kept, left = [], budget
    for tokens in neighbor_tokens:
        if left <= 0 or (separator is not None and left < 2 and len(tokens) > left):  # a lone EOS: no text
            break
        kept.append(tokens[-left:] if len(tokens) > left else tokens)
        left -= len(kept[-1])
    return [t for tokens in reversed(kept) for t in tokens]


def in_context(lm, text: str, neighbor_texts: list[str], context: int | None = None, keep: str = "nearest",
               join: str = "eos") -> dict:
    """Log-likelihood (nats) of `text` with its neighbours (nearest first) before it in a context of `context`
    tokens (default: the model's); only the document's tokens are scored and its bytes counted.

    join="eos" (default): the scoring prefix (`lm.prefix_token_id`, as the document scored alone starts from),
    then each neighbour followed by EOS, then the document; so with no neighbour, or no room for one, it is
    exactly the no-context score and the neighbours' text is the only difference. join="official": the official
    code's plain concatenation of neighbours and document, no prefix and no separator. Short of room the
    neighbours are cut by `keep` (`in_context_prefix`); a document that leaves no room is scored without them,
    as the official code did. Returns loglik, n_tokens, n_bytes and context_tokens (the neighbours' tokens
    placed, separators included). Raises ValueError for an unknown `join` or `keep`, or join="eos" with a
    tokenizer that has no EOS."""
    if join not in IN_CONTEXT_JOIN:
        raise ValueError(f"invalid join={join!r}: expected one of {list(IN_CONTEXT_JOIN)}")
    if keep not in IN_CONTEXT_KEEP:
        raise ValueError(f"invalid keep={keep!r}: expected one of {list(IN_CONTEXT_KEEP)}")
    eos = lm.tokenizer.eos_token_id
    if join == "eos" and eos is None:
        raise ValueError(f"model {lm.name!r} has no EOS token to end each neighbour with; use join='official'")
    window = min(context or lm.context_length, lm.context_length)
    tokens, n_bytes = scored_tokens(lm.tokenizer, text)
    neighbor_tokens = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in neighbor_texts]
    if join == "official":  # the document's first token needs one token before it: the context, else the prefix
        neighbours = in_context_prefix(neighbor_tokens, window - len(tokens), keep) if len(tokens) < window else []
        before = neighbours
    else:
        neighbours = in_context_prefix(neighbor_tokens, window - 1 - len(tokens), keep, separator=eos)
        before = [lm.prefix_token_id] + neighbours
    if join == "eos" and not neighbours:  # nothing placed: the no-context score itself, summed as it sums
        loglik = loglikelihood_rolling(lm.model, tokens, lm.prefix_token_id, window)
    else:
        loglik = float(token_logprobs(lm.model, tokens, lm.prefix_token_id, window, before).sum())
    return {"loglik": loglik, "n_tokens": len(tokens), "n_bytes": n_bytes,
            "context_tokens": len(neighbours)}


# ------------------------------------------------------------------------------------- dynamic evaluation
def dynamic_evaluation(lm, text: str, config, steps: tuple[int, ...] = (0, 1, 2, 5, 10, 20),
                       optimizer_factory=None) -> dict:
    """Train on the document's first part (the split protocol's query: min(1024, n/2) tokens) and score the
    rest after each number of steps in `steps`; the weights are restored afterwards. No scored token is ever
    trained on: the scored text starts where the trained text ends."""
    from .metrics import score_text
    from .ttt import make_optimizer

    trained, scored = split_query_and_scored(lm.tokenizer, text)
    snapshot = loaded_weights(lm, config)  # the model's, taken once; never one of what a failed document left
    optimizer = (optimizer_factory or make_optimizer)(lm.model, config)
    evals, taken = [], 0
    with restored_after(lm, snapshot, optimizer):  # however it ends: no gradient left, weights back
        for target in sorted(set(steps)):
            while taken < target:
                train_on_text(lm, trained, optimizer, config)
                taken += 1
            score = score_text(lm, scored, config.eval_context, config.max_eval_tokens)
            evals.append({"steps": target, "loglik": score["loglik"], "n_bytes": score["n_bytes"]})
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
        return bits_per_byte(sum(interpolated_loglik(d["logprobs"], d["targets"], d["p_knn"], alpha) for d in tuning),
                             sum(d["n_bytes"] for d in tuning))
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


def baseline_row(study, document: dict, contexts=(None, 1024), keeps=IN_CONTEXT_KEEP, full: bool = True,
                 joins=IN_CONTEXT_JOIN[:1]) -> dict:
    """Every baseline of one document, on the k nearest neighbours TTT-NN trains on (equal k):

    - `loglik`, `token_logprobs`: the document scored alone (k = 0), each token's log-probability;
    - `knn_probs`: p_knn of each scored token (the neighbours' unigram mixture, for interpolation at any alpha);
    - `in_context` (with `full`): one entry per context size (None: the model's), truncation rule and join
      (`in_context`; default the prefix + EOS-separated one only), then the random-chunk control;
    - `dynamic` (with `full`): trained on the document's first part, the rest scored after each k of the grid.
    Seconds are wall times of each method on this machine."""
    import time

    lm, config = study.language_model(), study.config
    neighbors = study.training_texts(document)
    tokens, n_bytes = scored_tokens(lm.tokenizer, document["text"])
    window = min(config.eval_context or lm.context_length, lm.context_length)
    start = time.perf_counter()
    logprobs = token_logprobs(lm.model, tokens, lm.prefix_token_id, window)
    score_seconds = time.perf_counter() - start
    neighbor_tokens = [lm.tokenizer(n.text, add_special_tokens=False)["input_ids"] for n in neighbors]
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    p_knn = unigram_distribution(neighbor_tokens, [n.distance for n in neighbors], vocab) if neighbors else np.zeros(vocab)
    row = {"doc_id": document["id"], "domain": document["domain"], "pile_set_name": document["pile_set_name"],
           "group": document.get("group", document["id"]), "source_id": document.get("source_id", document["id"]),
           "n_bytes": n_bytes, "n_tokens": len(tokens),
           "loglik": float(logprobs.sum()), "score_seconds": score_seconds,
           "token_logprobs": logprobs.tolist(), "knn_probs": p_knn[np.asarray(tokens, dtype=int)].tolist(),
           "neighbors": [n.doc_id for n in neighbors]}
    if not full:
        return row
    row["in_context"] = []
    for context in contexts:
        for keep in keeps:
            for join in joins:
                start = time.perf_counter()
                scored = in_context(lm, document["text"], [n.text for n in neighbors], context, keep, join)
                row["in_context"].append({"context": context or lm.context_length, "keep": keep, "join": join,
                                          "neighbors": "nearest", "loglik": scored["loglik"],
                                          "context_tokens": scored["context_tokens"],
                                          "seconds": time.perf_counter() - start})
    # The control for in-context's gain: as many random chunks of the document's domain in the same context. What
    # the nearest neighbours add beyond it is retrieval's; their overlap with the document says whether it is copied.
    start = time.perf_counter()
    randoms = random_neighbors(document, len(neighbors), "random-domain", study.index, study.corpus, config.seed)
    scored = in_context(lm, document["text"], [n.text for n in randoms], contexts[0], keeps[0], joins[0])
    row["in_context"].append({"context": contexts[0] or lm.context_length, "keep": keeps[0], "join": joins[0],
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


def baseline_settings(study, contexts=(None, 1024), keeps=IN_CONTEXT_KEEP, full: bool = True,
                      joins=IN_CONTEXT_JOIN[:1]) -> dict:
    """What a baseline row depends on beside its document: the run's inputs (configuration and content,
    `Study.result_inputs`), the baseline settings and the code's `BASELINES_VERSION`."""
    return {"run": study.result_inputs(), "contexts": list(contexts),
            "keeps": list(keeps), "joins": list(joins), "full": full, "in_context_control": "random-domain",
            "baselines_version": BASELINES_VERSION}


def baselines_key(study, contexts=(None, 1024), keeps=IN_CONTEXT_KEEP, full: bool = True,
                  joins=IN_CONTEXT_JOIN[:1]) -> str:
    """The results file's name: 'baselines-' and a hash of the run's inputs, the baseline settings and the
    version of the baselines' code."""
    from .files import content_key

    return "baselines-" + content_key(baseline_settings(study, contexts, keeps, full, joins))


def documents_frame(rows: list[dict], logliks, n_bytes=None):
    """A `metrics.documents_at`-shaped frame (index doc_id: domain, group, loglik, n_bytes, bpb) from baseline
    rows and one log-likelihood per row; `n_bytes` are the scored bytes (default: the whole document's)."""
    import pandas as pd

    frame = pd.DataFrame({"domain": [r["domain"] for r in rows], "group": [r["group"] for r in rows],
                          "loglik": list(logliks), "n_bytes": list(n_bytes or [r["n_bytes"] for r in rows])},
                         index=pd.Index([r["doc_id"] for r in rows], name="doc_id"))
    return frame.assign(bpb=bits_per_byte(frame["loglik"], frame["n_bytes"]))


def run_baselines(study, documents: list[dict], contexts=(None, 1024), keeps=IN_CONTEXT_KEEP, full: bool = True,
                  progress: bool = True, joins=IN_CONTEXT_JOIN[:1]) -> list[dict]:
    """`baseline_row` for every document, each appended to a results file the moment it is done (named by the
    run's key and the baseline settings), so a killed run resumes where it stopped."""
    import json

    from tqdm import tqdm

    from .results import ResultsStore

    settings = baseline_settings(study, contexts, keeps, full, joins)
    path = study.results_path.parent / f"{baselines_key(study, contexts, keeps, full, joins)}.jsonl"
    store = ResultsStore(path)
    path.with_suffix(".config.json").write_text(json.dumps(settings, indent=1))
    pending = [d for d in documents if d["id"] not in store]
    for document in tqdm(pending, desc="baselines", unit="doc", disable=not progress):
        store.append(baseline_row(study, document, contexts, keeps, full, joins))
    return [store.rows[d["id"]] for d in documents]
