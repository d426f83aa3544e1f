"""Where in-context's gain comes from: every scored token's log-probability (nats) under no context, under
contexts of the same length that differ in what their tokens say, and after TTT-NN, on the same documents.

The paper found training on the neighbours far better than reading them (GPT-2 Large: -0.8 % in context against
-19.2 % for TTT-NN at k = 20, Hardt & Sun 2024, section 6); here reading wins. The contexts (`CONTEXTS`) test
whether a short document's cold start, which any context warms, explains it:

- 'nearest': the k nearest neighbours, as `baselines.in_context` (join='eos': the scoring prefix, each
  neighbour ending with EOS, the document); the others are cut to the tokens this one placed;
- 'after': the same neighbours placed after the document, which it cannot see: its scores must equal no context
  (a check of the code, not a finding);
- 'random-any': random chunks of the whole index (a generic warm start); 'random-domain': of its own domain;
- 'preceding': the document's own preceding text from its source, joined without EOS (what a continuous
  document has); None where the document is its source's first chunk;
- 'filler': a neutral filler, newlines, of the same length, ending with EOS.

`ttt` is TTT-NN on the same k nearest neighbours (`ttt.train_on_text` per neighbour, weights restored after), its
tokens scored without context. Every score is `baselines.target_logprobs`: one window when the context and the
document fit, else the document alone in rolling windows (then every context is dropped, as the official code
dropped neighbours that did not fit). Bytes per token are `metrics.token_byte_counts`, so the bits per byte of
any span of tokens sum to the document's.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from .baselines import documents_frame, in_context_prefix, target_logprobs
from .metrics import paired_change, scored_tokens, token_byte_counts
from .retrieve import random_neighbors

CONTEXTS = ("nearest", "after", "random-any", "random-domain", "preceding", "filler")
# Part of the rows' key (`context_key`): bumped whenever a row's numbers change.
CONTEXT_VERSION = 1


def preceding_text(corpus, document: dict) -> str | None:
    """The text before `document` in its source: its source's earlier chunks (same domain and source, lower
    chunk number, in order), joined; None for a source's first chunk."""
    cache = corpus.cache
    if "chunk_order" not in cache:
        cache["chunk_order"] = corpus.dataset.select_columns(["domain", "source_id", "chunk"]).to_pandas()
    table = cache["chunk_order"]
    earlier = table[(table["domain"] == document["domain"]) & (table["source_id"] == document["source_id"])
                    & (table["chunk"] < document["chunk"])].sort_values("chunk")
    if earlier.empty:
        return None
    return "".join(corpus.texts(earlier.index.to_numpy()))


def context_tokens(lm, kind: str, texts: list[str] | None, budget: int) -> list[int] | None:
    """The tokens of context `kind` (`CONTEXTS`) placed before the document, at most `budget` tokens: chunks
    (nearest first) each ending with EOS, cut as in-context cuts them; 'preceding' the last `budget` tokens of the
    text before the document; 'filler' newlines then EOS. None where there is no such context."""
    eos = lm.tokenizer.eos_token_id
    if kind == "filler":
        newline = lm.tokenizer("\n", add_special_tokens=False)["input_ids"][-1:]
        return (newline * max(budget - 1, 0) + [eos])[:budget] if budget > 0 else []
    if texts is None:
        return None
    tokens = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if kind == "preceding":
        joined = [t for piece in tokens for t in piece]
        return joined[-budget:] if budget > 0 else []
    return in_context_prefix(tokens, budget, "nearest", separator=eos)


def ttt_logprobs(study, document: dict, neighbors: list, windows: list[int]) -> dict[int, np.ndarray]:
    """Each scored token's log-probability after TTT-NN on `neighbors` (one step per chunk, as `ttt.
    test_time_train`), scored in each of `windows` (tokens) from one training, the model restored afterwards;
    equal in sum to that run's log-likelihood at k in the same window."""
    import torch

    from .ttt import heap_allocation, loaded_weights, make_optimizer, restored_after, train_on_text

    lm, config = study.language_model(), study.config
    torch.manual_seed(config.seed)
    snapshot = loaded_weights(lm, config)
    optimizer = make_optimizer(lm.model, config)
    tokens, _ = scored_tokens(lm.tokenizer, document["text"], config.max_eval_tokens)
    with heap_allocation(), restored_after(lm, snapshot, optimizer, config.reset_optimizer):
        for neighbor in neighbors:
            train_on_text(lm, neighbor.text, optimizer, config)
        return {w: target_logprobs(lm.model, tokens, lm.prefix_token_id, w) for w in windows}


def context_row(study, document: dict, contexts=CONTEXTS, windows=(None,), ttt: bool = True) -> dict:
    """One document's per-token log-probabilities (nats), for each window of `windows` (tokens; None: the
    model's context): under no context ('none'), each of `contexts` and, with `ttt`, after TTT-NN on its k
    nearest neighbours (trained once, scored in every window). Also its tokens' bytes and each context's length
    in tokens; a context that does not exist (or 'preceding' for a source's first chunk) is None. Read one
    window's entries with `rows_at`."""
    lm, config = study.language_model(), study.config
    resolved = list(dict.fromkeys(min(w or lm.context_length, lm.context_length) for w in windows))
    text = document["text"]
    tokens, n_bytes = scored_tokens(lm.tokenizer, text, config.max_eval_tokens)
    prefix, eos = lm.prefix_token_id, lm.tokenizer.eos_token_id
    neighbors = study.training_texts(document)
    row = {"doc_id": document["id"], "domain": document["domain"], "pile_set_name": document["pile_set_name"],
           "group": document.get("group", document["id"]), "source_id": document.get("source_id", document["id"]),
           "n_bytes": n_bytes, "token_bytes": token_byte_counts(lm.tokenizer, text, tokens),
           "model_context": lm.context_length, "neighbors": [n.doc_id for n in neighbors], "windows": {}}
    sources = {"nearest": [n.text for n in neighbors],
               "random-any": [n.text for n in random_neighbors(document, len(neighbors), "random-any",
                                                               study.index, study.corpus, config.seed)],
               "random-domain": [n.text for n in random_neighbors(document, len(neighbors), "random-domain",
                                                                  study.index, study.corpus, config.seed)],
               "preceding": (lambda t: None if t is None else [t])(preceding_text(study.corpus, document))}
    for window in resolved:
        nearest = context_tokens(lm, "nearest", sources["nearest"], window - 1 - len(tokens))
        budget = len(nearest)  # every other context is cut to the tokens the nearest neighbours take
        entry = row["windows"][str(window)] = {"context_tokens": {}, "logprobs": {}, "seconds": {}}
        start = time.perf_counter()
        entry["logprobs"]["none"] = target_logprobs(lm.model, tokens, prefix, window).tolist()
        entry["seconds"]["none"] = time.perf_counter() - start
        for kind in contexts:
            start = time.perf_counter()
            if kind == "after":  # the neighbours follow the document: [prefix] + document + [EOS] + neighbours
                placed = nearest
                scored = target_logprobs(lm.model, tokens, prefix, window, [prefix], after=[eos] + nearest)
            else:
                placed = nearest if kind == "nearest" else context_tokens(lm, kind, sources.get(kind), budget)
                scored = None if placed is None else target_logprobs(lm.model, tokens, prefix, window,
                                                                     [prefix] + placed)
            entry["context_tokens"][kind] = None if placed is None else len(placed)
            entry["logprobs"][kind] = None if scored is None else scored.tolist()
            entry["seconds"][kind] = time.perf_counter() - start
    if ttt:
        start = time.perf_counter()
        for window, logprobs in ttt_logprobs(study, document, neighbors, resolved).items():
            row["windows"][str(window)]["logprobs"]["ttt"] = logprobs.tolist()
        row["ttt_seconds"] = time.perf_counter() - start
    return row


def rows_at(rows: list[dict], window: int | None = None) -> list[dict]:
    """The rows of one window (None: the model's context) with its `logprobs` and `context_tokens` at the top,
    the shape `span_frame`, `span_change` and `position_frame` read."""
    out = []
    for r in rows:
        entry = r["windows"][str(min(window or r["model_context"], r["model_context"]))]
        out.append({**{k: v for k, v in r.items() if k != "windows"}, **entry})
    return out


def context_settings(study, contexts=CONTEXTS, windows=(None,), ttt: bool = True) -> dict:
    """What a context row depends on beside its document: the run's inputs, these settings and the code's
    `CONTEXT_VERSION`."""
    return {"run": study.result_inputs(), "contexts": list(contexts), "windows": list(windows), "ttt": ttt,
            "context_version": CONTEXT_VERSION}


def context_key(study, contexts=CONTEXTS, windows=(None,), ttt: bool = True) -> str:
    """The results file's name: 'context-' and a hash of `context_settings`."""
    import hashlib
    import json

    text = json.dumps(context_settings(study, contexts, windows, ttt), sort_keys=True)
    return "context-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def run_contexts(study, documents: list[dict], contexts=CONTEXTS, windows=(None,), ttt: bool = True,
                 progress: bool = True) -> list[dict]:
    """`context_row` for every document, each appended to a results file the moment it is done (named by
    `context_key`), so a killed run resumes where it stopped."""
    import json

    from tqdm import tqdm

    from .results import ResultsStore

    settings = context_settings(study, contexts, windows, ttt)
    path = study.results_path.parent / f"{context_key(study, contexts, windows, ttt)}.jsonl"
    store = ResultsStore(path)
    path.with_suffix(".config.json").write_text(json.dumps(settings, indent=1))
    for document in tqdm([d for d in documents if d["id"] not in store], desc="contexts", unit="doc",
                         disable=not progress):
        store.append(context_row(study, document, contexts, windows, ttt))
    return [store.rows[d["id"]] for d in documents]


# ---------------------------------------------------------------------------------------------- analysis
def span_frame(rows: list[dict], method: str, start: int = 0, stop: int | None = None) -> pd.DataFrame:
    """A `metrics.documents_at`-shaped frame (bpb, loglik, n_bytes, domain, group by doc_id) of `method`'s
    tokens start:stop of every row that has the method (the bytes are those of the same tokens for every
    method, so two frames pair). Documents with no tokens in the span are left out."""
    kept = [r for r in rows if r["logprobs"].get(method) is not None and len(r["token_bytes"][start:stop])]
    return documents_frame(kept, [float(np.sum(r["logprobs"][method][start:stop])) for r in kept],
                           [int(np.sum(r["token_bytes"][start:stop])) for r in kept])


def span_change(rows: list[dict], a: str, b: str, names: dict, start: int = 0, stop: int | None = None,
                samples: int = 1000, seed: int = 0):
    """`metrics.paired_change` of method `b` against `a` on tokens start:stop, on the documents that have both."""
    both = [r for r in rows if r["logprobs"].get(a) is not None and r["logprobs"].get(b) is not None]
    return paired_change(span_frame(both, a, start, stop), span_frame(both, b, start, stop), names, samples, seed)


def head_share(rows: list[dict], method: str, tokens: int, baseline: str = "none") -> float:
    """The share of `method`'s gain over `baseline` (log-likelihood, summed over documents) that its first `tokens`
    tokens carry; NaN without a gain."""
    both = [r for r in rows if r["logprobs"].get(method) is not None]
    gains = [np.asarray(r["logprobs"][method]) - np.asarray(r["logprobs"][baseline]) for r in both]
    total = float(sum(g.sum() for g in gains))
    return float(sum(g[:tokens].sum() for g in gains)) / total if total > 0 else float("nan")


def position_frame(rows: list[dict], edges: list[int]) -> pd.DataFrame:
    """Mean loss (nats per token) and bits per byte of every method in each bin of token positions
    [edges[i], edges[i+1]): long format, one row per document, method and bin (empty bins left out)."""
    out = []
    for r in rows:
        nbytes = np.asarray(r["token_bytes"])
        for method, logprobs in r["logprobs"].items():
            if logprobs is None:
                continue
            logprobs = np.asarray(logprobs)
            for lo, hi in zip(edges[:-1], edges[1:]):
                if lo >= len(logprobs):
                    break
                span = slice(lo, min(hi, len(logprobs)))
                out.append({"doc_id": r["doc_id"], "method": method, "bin": f"{lo}-{hi - 1}", "start": lo,
                            "loss": float(-logprobs[span].mean()),
                            "bpb": float(-logprobs[span].sum() / max(nbytes[span].sum(), 1) / math.log(2)),
                            "tokens": int(span.stop - span.start)})
    return pd.DataFrame(out)
