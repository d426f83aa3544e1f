"""Where in-context's gain comes from: every scored token's log-probability (nats) under no context, under
contexts of the same length that differ in what their tokens say, and after TTT-NN, on the same documents.

The paper found training on the neighbours far better than reading them (GPT-2 Large: -0.8 % in context against
-19.2 % for TTT-NN at k = 20, Hardt & Sun 2024, section 6); here reading wins. The contexts (`CONTEXTS`) test
whether a short document's cold start, which any context warms, explains it:

- 'nearest': the k nearest neighbours, as `baselines.in_context` (join='eos': the scoring prefix, each
  neighbour ending with EOS, the document); the others are cut to at most the tokens this one placed (random
  contexts draw enough chunks to fill them);
- 'after': the same neighbours placed after the document, which it cannot see: its scores must equal no context
  (a check of the code, not a finding);
- 'random-any': random chunks of the whole index (a generic warm start); 'random-domain': of its own domain;
- 'preceding': the document's own preceding text from its source, joined without EOS (what a continuous
  document has), at most as long as 'nearest' (shorter where the source has less); None where the document is its
  source's first chunk;
- 'filler': a context that says nothing: newlines, ending with EOS (no repeated token is neutral to a language
  model; the chapter shows what this one does).

`ttt` is TTT-NN on the same k nearest neighbours (`ttt.train_on_text` per neighbour, weights restored after), its
tokens scored without context. A row also holds the document's longer version (`longer_document`: its source's
adjacent test chunks, the paper's whole documents in miniature), scored without context, with the same nearest
neighbours and after the same training: the two lengths differ in nothing else. Every score is
`metrics.token_logprobs`: one window when the context and the document fit, else the document alone in rolling
windows (then every context is dropped, as the official code dropped neighbours that did not fit). Bytes per
token are `metrics.token_byte_counts`, so the bits per byte of any span of tokens sum to the document's.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .baselines import documents_frame, in_context_prefix
from .metrics import bits_per_byte, paired_change, scored_tokens, token_byte_counts, token_logprobs
from .retrieve import random_neighbors

CONTEXTS = ("nearest", "after", "random-any", "random-domain", "preceding", "filler")
VERSIONS = ("chunk", "longer")  # a row's documents: the test chunk and its longer version (`longer_document`)
# Part of the rows' key (`context_key`): bumped whenever a row's numbers change.
#   2: random contexts drawn to fill the nearest neighbours' tokens; a longer version of each document, scored after
#      the same training; logits projected at the scored positions only.
CONTEXT_VERSION = 2
RANDOM_DRAWS = 4  # random chunks drawn per neighbour, so that a random context fills the nearest one's tokens


def _chunk_table(corpus) -> pd.DataFrame:
    cache = corpus.cache
    if "chunk_order" not in cache:
        cache["chunk_order"] = corpus.dataset.select_columns(["domain", "source_id", "group", "split",
                                                              "chunk"]).to_pandas()
    return cache["chunk_order"]


def preceding_text(corpus, document: dict, max_bytes: int | None = None) -> str | None:
    """The text before `document` in its source: its source's earlier chunks (same domain and source, lower
    chunk number, in order), joined; with `max_bytes`, only the last chunks that reach that many UTF-8 bytes (a
    context keeps the end; a source can be 31 MB). None for a source's first chunk."""
    table = _chunk_table(corpus)
    earlier = table[(table["domain"] == document["domain"]) & (table["source_id"] == document["source_id"])
                    & (table["chunk"] < document["chunk"])].sort_values("chunk")
    if earlier.empty:
        return None
    if max_bytes is None:
        return "".join(corpus.texts(earlier.index.to_numpy()))
    kept, size = [], 0
    for row in earlier.index[::-1]:
        kept.append(corpus.texts([row])[0])
        size += len(kept[-1].encode("utf-8"))
        if size >= max_bytes:
            break
    return "".join(reversed(kept))


def longer_document(corpus, document: dict, n_bytes: int) -> dict:
    """`document` (a test chunk) grown into a longer test document of at least `n_bytes` UTF-8 bytes where its
    source allows: its source's adjacent chunks of the same content group and split, the following ones first,
    then the preceding ones, whole chunks joined in order (chunks are consecutive byte spans of their source, so
    this is the source's own text). A source shorter than `n_bytes` gives all of its chunks in that group (the
    whole document, as the paper scored). Same id, domain, group and source; `chunks` lists its chunk numbers.
    Every chunk is a test chunk, so the index (decontaminated against the test split) holds none of its text."""
    table = _chunk_table(corpus)
    own = table[(table["domain"] == document["domain"]) & (table["source_id"] == document["source_id"])
                & (table["group"] == document["group"]) & (table["split"] == "test")]
    by_chunk = dict(zip(own["chunk"], own.index))
    texts = dict(zip(own["chunk"], corpus.texts(own.index.to_numpy())))
    chunks, size = [document["chunk"]], len(document["text"].encode("utf-8"))
    for step in (1, -1):
        nxt = document["chunk"] + step
        while size < n_bytes and nxt in by_chunk:
            chunks.append(nxt)
            size += len(texts[nxt].encode("utf-8"))
            nxt += step
    chunks.sort()
    return {**document, "text": "".join(texts[c] for c in chunks), "chunks": chunks}


def context_tokens(lm, kind: str, texts: list[str] | None, budget: int) -> list[int] | None:
    """The tokens of context `kind` (`CONTEXTS`) placed before the document, at most `budget` tokens: chunks
    (nearest first) each ending with EOS, cut as in-context cuts them; 'preceding' the last `budget` tokens of the
    text before the document (fewer where the source has less); 'filler' newlines then EOS. None where there is no such context."""
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


def _resolved(lm, windows) -> list[int]:
    return list(dict.fromkeys(min(w or lm.context_length, lm.context_length) for w in windows))


def _alone(lm, tokens: list[int], window: int, cache: dict) -> list[float]:
    """`tokens`' log-probabilities (nats) without context in `window` tokens. Every window the tokens fit in scores
    them alike, so `cache` (one dict per document and weights) keeps one score per min(window, len(tokens))."""
    key = min(window, len(tokens))
    if key not in cache:
        cache[key] = token_logprobs(lm.model, tokens, lm.prefix_token_id, window).tolist()
    return cache[key]


def _scored_version(lm, text: str, sources: dict, contexts, windows: list[int]) -> dict:
    """One document's tokens, their bytes and, in each window, their log-probabilities under no context and each
    context (cut to the tokens the nearest neighbours take there)."""
    tokens, n_bytes = scored_tokens(lm.tokenizer, text)
    prefix, eos = lm.prefix_token_id, lm.tokenizer.eos_token_id
    out = {"n_bytes": n_bytes, "n_tokens": len(tokens), "token_bytes": token_byte_counts(lm.tokenizer, text, tokens),
           "windows": {}}
    alone = {}  # scores without context, by the tokens a window holds (`_alone`)
    for window in windows:
        nearest = context_tokens(lm, "nearest", sources["nearest"], window - 1 - len(tokens))
        budget = len(nearest)  # every other context is cut to the tokens the nearest neighbours take
        entry = out["windows"][str(window)] = {"context_tokens": {}, "logprobs": {}, "seconds": {}}
        start = time.perf_counter()
        entry["logprobs"]["none"] = _alone(lm, tokens, window, alone)
        entry["seconds"]["none"] = time.perf_counter() - start
        for kind in contexts:
            start = time.perf_counter()
            if kind == "after":  # the neighbours follow the document: [prefix] + document + [EOS] + neighbours
                placed = nearest
                scored = token_logprobs(lm.model, tokens, prefix, window, [prefix], after=[eos] + nearest).tolist()
            else:
                placed = nearest if kind == "nearest" else context_tokens(lm, kind, sources.get(kind), budget)
                # Nothing placed (no room): the document alone, as `baselines.in_context` scores it.
                scored = (None if placed is None else entry["logprobs"]["none"] if not placed
                          else token_logprobs(lm.model, tokens, prefix, window, [prefix] + placed))
            entry["context_tokens"][kind] = None if placed is None else len(placed)
            entry["logprobs"][kind] = None if scored is None else list(scored)
            entry["seconds"][kind] = time.perf_counter() - start
    return out


def ttt_logprobs(study, neighbors: list, scored: dict[str, tuple[str, list[int]]]) -> dict[str, dict[int, list]]:
    """Each scored token's log-probability after TTT-NN on `neighbors` (one step per chunk, as `ttt.
    test_time_train`), for each of `scored`'s documents (name: (text, windows in tokens)) in each of its windows,
    from one training; the model restored afterwards. Equal in sum to that run's log-likelihood at k."""
    import torch

    from .ttt import heap_allocation, loaded_weights, make_optimizer, restored_after, train_on_text

    lm, config = study.language_model(), study.config
    torch.manual_seed(config.seed)
    snapshot = loaded_weights(lm, config)
    optimizer = make_optimizer(lm.model, config)
    with heap_allocation(), restored_after(lm, snapshot, optimizer, config.reset_optimizer):
        for neighbor in neighbors:
            train_on_text(lm, neighbor.text, optimizer, config)
        out = {}
        for name, (text, windows) in scored.items():
            tokens, _ = scored_tokens(lm.tokenizer, text, config.max_eval_tokens)
            alone = {}
            for window in windows:
                out.setdefault(name, {})[window] = _alone(lm, tokens, window, alone)
        return out


def context_row(study, document: dict, contexts=CONTEXTS, windows=(None,), ttt: bool = True,
                longer_bytes: int = 0, longer_contexts=("nearest",), longer_windows=(None,)) -> dict:
    """One document's per-token log-probabilities (nats): its test chunk ('chunk') in each of `windows` (tokens;
    None: the model's context) under no context ('none') and each of `contexts`; with `longer_bytes`, its longer
    version (`longer_document`, 'longer') in each of `longer_windows` under no context and `longer_contexts`; with
    `ttt`, both after TTT-NN on the chunk's k nearest neighbours (trained once, scored in every window). The
    neighbours are the chunk's for both versions, so they differ only in the document's length. Also each
    version's tokens' bytes and each context's length in tokens; a context that does not exist ('preceding' for a
    source's first chunk) is None. Read one version and window with `rows_at`."""
    lm, config = study.language_model(), study.config
    if config.max_eval_tokens is not None:
        raise ValueError(f"invalid max_eval_tokens={config.max_eval_tokens!r} for the in-context chapter: a context "
                         "is placed before the whole document; use max_eval_tokens=None")
    if "preceding" in longer_contexts:  # the chunk's preceding text is the longer document's own beginning
        raise ValueError("invalid longer_contexts: 'preceding' would repeat the longer document's own text")
    neighbors = study.training_texts(document)

    def randoms(rule):  # enough random chunks to fill the nearest neighbours' tokens, where the domain has them
        try:
            drawn = random_neighbors(document, RANDOM_DRAWS * len(neighbors), rule, study.index, study.corpus,
                                     config.seed)
        except ValueError:
            drawn = random_neighbors(document, len(neighbors), rule, study.index, study.corpus, config.seed)
        return [n.text for n in drawn]

    # 4 bytes per token is typical: 32 leaves room for token-dense text (a context never exceeds the window).
    before = preceding_text(study.corpus, document, 32 * lm.context_length)
    sources = {"nearest": [n.text for n in neighbors],
               **{rule: randoms(rule) for rule in ("random-any", "random-domain") if rule in {*contexts, *longer_contexts}},
               "preceding": None if before is None else [before]}
    row = {"doc_id": document["id"], "domain": document["domain"], "pile_set_name": document["pile_set_name"],
           "group": document.get("group", document["id"]), "source_id": document.get("source_id", document["id"]),
           "model_context": lm.context_length, "neighbors": [n.doc_id for n in neighbors], "versions": {}}
    plan = {"chunk": (document, contexts, _resolved(lm, windows))}
    if longer_bytes:
        longer = longer_document(study.corpus, document, longer_bytes)
        plan["longer"] = (longer, longer_contexts, _resolved(lm, longer_windows))
    for name, (doc, kinds, resolved) in plan.items():
        row["versions"][name] = _scored_version(lm, doc["text"], sources, kinds, resolved)
        row["versions"][name]["chunks"] = doc.get("chunks", [doc.get("chunk")])
    if ttt:
        start = time.perf_counter()
        trained = ttt_logprobs(study, neighbors, {name: (doc["text"], resolved)
                                                  for name, (doc, _, resolved) in plan.items()})
        for name, by_window in trained.items():
            for window, logprobs in by_window.items():
                row["versions"][name]["windows"][str(window)]["logprobs"]["ttt"] = logprobs
        row["ttt_seconds"] = time.perf_counter() - start
    return row


def rows_at(rows: list[dict], window: int | None = None, version: str = "chunk") -> list[dict]:
    """The rows of one version ('chunk' or 'longer') and window (None: the model's context) with its `logprobs`,
    `context_tokens`, `n_bytes` and `token_bytes` at the top, the shape `span_frame`, `span_change` and
    `position_frame` read."""
    if version not in VERSIONS:
        raise ValueError(f"invalid version={version!r}: expected one of {list(VERSIONS)}")
    out = []
    for r in rows:
        scored = r["versions"][version]
        entry = scored["windows"][str(min(window or r["model_context"], r["model_context"]))]
        out.append({**{k: v for k, v in r.items() if k != "versions"},
                    **{k: v for k, v in scored.items() if k != "windows"}, **entry})
    return out


def context_settings(study, contexts=CONTEXTS, windows=(None,), ttt: bool = True, longer_bytes: int = 0,
                     longer_contexts=("nearest",), longer_windows=(None,)) -> dict:
    """What a context row depends on beside its document: the run's inputs, these settings and the code's
    `CONTEXT_VERSION`."""
    return {"run": study.result_inputs(), "contexts": list(contexts), "windows": list(windows), "ttt": ttt,
            "longer_bytes": longer_bytes, "longer_contexts": list(longer_contexts),
            "longer_windows": list(longer_windows), "random_draws": RANDOM_DRAWS, "context_version": CONTEXT_VERSION}


def context_key(study, *args, **kwargs) -> str:
    """The results file's name: 'context-' and a hash of `context_settings` (same arguments)."""
    from .files import content_key

    return "context-" + content_key(context_settings(study, *args, **kwargs))


def run_contexts(study, documents: list[dict], contexts=CONTEXTS, windows=(None,), ttt: bool = True,
                 longer_bytes: int = 0, longer_contexts=("nearest",), longer_windows=(None,),
                 progress: bool = True) -> list[dict]:
    """`context_row` for every document, each appended to a results file the moment it is done (named by
    `context_key`), so a killed run resumes where it stopped."""
    import json

    from tqdm import tqdm

    from .results import ResultsStore

    options = dict(contexts=contexts, windows=windows, ttt=ttt, longer_bytes=longer_bytes,
                   longer_contexts=longer_contexts, longer_windows=longer_windows)
    settings = context_settings(study, **options)
    path = study.results_path.parent / f"{context_key(study, **options)}.jsonl"
    from .files import atomic_file

    store = ResultsStore(path)
    with atomic_file(path.with_suffix(".config.json")) as tmp:
        tmp.write_text(json.dumps(settings, indent=1))
    for document in tqdm([d for d in documents if d["id"] not in store], desc=f"contexts ({study.config.model})",
                         unit="doc", disable=not progress):
        store.append(context_row(study, document, **options))
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


def change_difference(rows_a: list[dict], rows_b: list[dict], a: str, b: str, start_a: int = 0, start_b: int = 0,
                      samples: int = 1000, seed: int = 0):
    """Whether a comparison shrinks: each document's relative change of `b` against `a` (%) in `rows_a` (tokens
    from `start_a`) minus the same in `rows_b` (tokens from `start_b`), on the documents both have, as a
    `metrics.mean_change` (percentage points, paired, bootstrapped over content groups). Positive: `b` is further
    behind `a` in `rows_a` than in `rows_b`."""
    from .metrics import document_changes, mean_change

    def per_document(rows, start):
        both = [r for r in rows if r["logprobs"].get(a) is not None and r["logprobs"].get(b) is not None]
        return document_changes(span_frame(both, a, start), span_frame(both, b, start))

    first, second = per_document(rows_a, start_a), per_document(rows_b, start_b)
    common = first.index.intersection(second.index)
    groups = pd.Series({r["doc_id"]: r["group"] for r in rows_a}).loc[common]
    return mean_change(first.loc[common] - second.loc[common], groups, samples, seed)


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
                            "bpb": bits_per_byte(float(logprobs[span].sum()), max(int(nbytes[span].sum()), 1)),
                            "tokens": int(span.stop - span.start)})
    return pd.DataFrame(out)
