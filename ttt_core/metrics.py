"""Bits per byte and the paired change of bits per byte, each defined once and reused by every chapter.

Bits per byte follow lm-evaluation-harness 0.4's rolling log-likelihood (the paper's metric): a document is
tokenised without special tokens and cut into disjoint windows of the model's context; the first window is
prefixed with one token (lm-eval's rule: the tokenizer's BOS, else its EOS; see `models.scoring_prefix_token`),
the last is left-filled with preceding context, and every token is scored exactly once. (lm-eval 0.4.13 encodes
with the tokenizer's default special tokens, so for a tokenizer that adds BOS itself, as Gemma's, it would also
score that BOS as a text token; we score text tokens only. For GPT-2, SmolLM2 and Qwen the two are identical.)
A domain's bpb is -sum(LL) / sum(UTF-8 bytes) / ln 2 over its documents (long documents weigh more), and the
Pile aggregate is the Pile-weighted mean of domain bpbs, renormalised over the Pile tasks present.

A comparison (TTT-NN against none, one index or embedder or model against another) is paired: the same
documents scored both ways, the per-document change summarised with a 95 % bootstrap interval (the verdict's) and
the paper's 10-90 % beside it. The bootstrap is two-stage: content groups (a source document, or one text in every
language) are resampled, then documents within each drawn group, because chunks of one source are not independent
evidence. A verdict needs MIN_DOCUMENTS documents that differ at all, from MIN_SOURCES sources, and a two-sided
bootstrap p-value below ALPHA after Bonferroni's correction for the FAMILY_CLAIMS claims of the landing page.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

# Pile weights used by the paper's "pile_all" (official code, utils.py); they sum to 100.
PILE_WEIGHTS = {
    "arxiv": 8.96, "bookcorpus2": 0.75, "books3": 12.07, "dm-mathematics": 1.24, "enron": 0.14,
    "europarl": 0.73, "freelaw": 6.12, "github": 7.59, "gutenberg": 2.17, "hackernews": 0.62,
    "nih-exporter": 0.30, "opensubtitles": 1.55, "openwebtext2": 10.01, "philpapers": 0.38, "pile-cc": 18.11,
    "pubmed-abstracts": 3.07, "pubmed-central": 14.40, "stackexchange": 5.13, "ubuntu-irc": 0.88,
    "uspto": 3.65, "wikipedia": 1.53, "youtubesubtitles": 0.60,
}


# The verdict rule, one definition for every chapter and the landing page (see PairedChange.resolved).
VERDICT_QUANTILES = (0.025, 0.975)  # the 95 % interval a verdict reads
PAPER_QUANTILES = (0.1, 0.9)  # the paper's 10-90 % interval, shown beside it
ALPHA = 0.05
# The landing page grades this many claims (its results table has one row each; tests/test_report.py checks the
# count). Bonferroni over a family fixed in advance lets every chapter compute its verdict alone, and the landing
# page shows that same verdict: Holm's first step equals it, and it is valid (conservative) for any dependence.
FAMILY_CLAIMS = 14
# The fewest documents that differ for which even a sign test with every one of them on one side reaches
# p < 0.05 (2 * 0.5**6 = 0.031); below it no interval is claimed.
MIN_DOCUMENTS = 6
MIN_SOURCES = 2  # chunks of one source are one piece of evidence
# A document "differs" when its relative change of bits per byte exceeds this (percent): far below any effect we
# report (0.1 % is the printed precision), above float64 summation noise; a document whose two sides were the
# same computation (the same neighbours) changes by exactly 0.
DIFFERENCE_TOLERANCE = 1e-6
NO_INTERVAL = "no interval (one document)"  # a bound whose draws have no spread (one document per domain)
TOO_FEW = "no interval (too few documents)"  # a change short of MIN_DOCUMENTS / MIN_SOURCES (`shortfall`)


def refuse_duplicates(frame: pd.DataFrame, keys=("doc_id", "k")) -> None:
    """Raise a one-line ValueError naming the first document that has two rows at the same `keys` (two runs'
    rows mixed): averaging or summing them would count it twice or blend two runs."""
    doubled = frame.duplicated(list(keys), keep=False)
    if doubled.any():
        first = frame.loc[doubled].iloc[0]
        where = ", ".join(f"{k} = {first[k]!r}" for k in keys)
        raise ValueError(f"document {first['doc_id']!r} has {int(doubled.sum())} rows at {where}; pass one run's "
                         f"rows (one per document and k)")


def rolling_windows(tokens: list[int], prefix_token: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's get_rolling_token_windows(context_len=1) + make_disjoint_window: (context, targets) pairs."""
    windows = []
    if not tokens:
        return windows
    first = min(max_len, len(tokens))
    windows.append(([prefix_token] + tokens[:first - 1], tokens[:first]))
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, max_len)
        end = predicted + n
        windows.append((tokens[max(0, end - max_len - 1):end - 1], tokens[end - n:end]))
        predicted += n
    # make_disjoint_window: the context keeps only what precedes the targets.
    return [(ctx[:len(ctx) - (len(tgt) - 1)], tgt) for ctx, tgt in windows]


@functools.lru_cache(maxsize=None)
def _accepts_logits_to_keep(model_class: type) -> bool:
    """Whether a model class's forward takes `logits_to_keep` (transformers' causal LMs do; read once per class)."""
    import inspect

    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


@torch.no_grad()
def token_logprobs(model, tokens: list[int], prefix_token: int, max_len: int, context: list[int] | None = None,
                   after: list[int] = ()) -> np.ndarray:
    """The study's one scoring loop: the natural-log probability (nats) of every token of `tokens`, float64
    `[len(tokens)]`, each scored once. After `context` (token ids) in one window when both fit in `max_len` tokens
    (in-context); else lm-eval's rolling windows (`rolling_windows`) from `prefix_token`, the study's bits per
    byte. `after` (token ids) is fed after the tokens in that one window, as much as fits: a causal model cannot
    use it, so it changes no score (a check, `context.CONTEXTS`' 'after'); it is dropped with the context.

    Logits are computed at the targets' positions only (transformers' `logits_to_keep`, where the model takes
    it): a context of n tokens costs no n-by-vocabulary projection (Gemma's 262,144-token head is half its
    forward pass). The same numbers as projecting every position, to float rounding."""
    model.eval()
    device = next(model.parameters()).device
    if context and len(context) + len(tokens) <= max_len:
        windows = [(context, tokens)]
    else:
        windows, after = rolling_windows(tokens, prefix_token, max_len), ()
    sliced = _accepts_logits_to_keep(type(model))
    out = []
    for ctx, targets in windows:
        inputs = (ctx + targets)[:-1]
        if after:
            inputs = ctx + targets + list(after)[:max_len - len(ctx) - len(targets)]
        # The logits at position i predict input i + 1: the targets' are those of the positions just before them.
        first = len(ctx) - 1
        ids = torch.tensor([inputs], device=device)
        if sliced:
            keep = torch.arange(first, first + len(targets), device=device)
            logits = model(input_ids=ids, logits_to_keep=keep).logits[0]
        else:
            logits = model(input_ids=ids).logits[0, first:first + len(targets)]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        out.append(logprobs.gather(1, torch.tensor(targets, device=device)[:, None])[:, 0].double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def loglikelihood_rolling(model, tokens: list[int], prefix_token: int, max_len: int) -> float:
    """Sum of natural-log probabilities (nats) of every token of `tokens` in rolling windows of `max_len`
    (`token_logprobs` without context)."""
    return float(token_logprobs(model, tokens, prefix_token, max_len).sum())


def _byte_level(tokenizer) -> bool:
    """Whether the tokenizer's pieces spell bytes in GPT-2's byte-to-unicode alphabet (GPT-2, SmolLM2, Qwen, the
    tiny test models) rather than text with '▁' for a space and <0xNN> byte-fallback pieces (SentencePiece:
    Llama, Gemma)."""
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow tokenizer: GPT-2's keeps its byte decoder
        return hasattr(tokenizer, "byte_decoder")
    found = []

    def walk(node):
        if isinstance(node, dict):
            found.append(node.get("type"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(json.loads(backend.to_str()).get("decoder"))
    return "ByteLevel" in found


def token_bytes(tokenizer, ids: list[int]) -> list[int]:
    """How many UTF-8 bytes of text each token stands for, from its piece: a byte-level piece one byte per
    character of GPT-2's alphabet, a <0xNN> byte-fallback piece one byte, another SentencePiece piece its text with
    '▁' read as a space, an added (special) token its content. Exact for a token that ends inside a character
    (a byte-level 'Ġâ' is a space and the first byte of '€': 2). Not the pieces of a text's first token, which
    may carry a space the tokenizer added (SentencePiece's dummy prefix): `scored_tokens` never needs them."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    added = {i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    byte_level = _byte_level(tokenizer)
    alphabet = set(bytes_to_unicode().values()) if byte_level else set()
    out = []
    for token_id, piece in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        if token_id in added:
            out.append(len(added[token_id].encode("utf-8")))
        elif byte_level:
            if not set(piece) <= alphabet:
                raise ValueError(f"token {token_id} ({piece!r}) is not spelled in the byte-level alphabet")
            out.append(len(piece))
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(1)
        else:
            out.append(len(piece.replace("\u2581", " ").encode("utf-8")))
    return out


def scored_tokens(tokenizer, text: str, max_tokens: int | None = None) -> tuple[list[int], int]:
    """The tokens of `text` that are scored (all, or the first `max_tokens`) and the UTF-8 bytes they cover.

    Bytes are those of the scored tokens, never of a decoded string (a cut inside a character decodes to U+FFFD,
    3 bytes). Where the tokens' own bytes (`token_bytes`: byte-level BPE, SentencePiece with byte fallback) spell
    the text exactly, the scored tokens' bytes are counted, so a token that ends inside a character counts the
    bytes of that character it holds. Otherwise (a tokenizer that normalises the text, or maps pieces to <unk>)
    the pieces do not spell the text, and a fast tokenizer's character offsets give the scored span of the
    original text instead (a token that ends inside a character then counts the whole character). Raises
    ValueError where neither is available (a slow tokenizer whose pieces do not spell the text)."""
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is None or len(tokens) <= max_tokens:
        return tokens, len(text.encode("utf-8"))
    try:
        counts = token_byte_counts(tokenizer, text, tokens)
    except ValueError as error:
        raise ValueError(f"cannot count the bytes of the first max_eval_tokens={max_tokens} tokens: {error}; use "
                         "max_eval_tokens=None (score the whole text)") from None
    return tokens[:max_tokens], sum(counts[:max_tokens])


def token_byte_counts(tokenizer, text: str, tokens: list[int]) -> list[int]:
    """The UTF-8 bytes of `text` each of its `tokens` (the tokenizer's, no special tokens) stands for, summing to
    the text's bytes: the tokens' own bytes (`token_bytes`) where they spell the text exactly, else spans of a
    fast tokenizer's character offsets (a token ending inside a character then counts the whole character, the
    last token the rest of the text). Raises ValueError where neither is available."""
    n_bytes = len(text.encode("utf-8"))
    pieces = token_bytes(tokenizer, tokens)
    if sum(pieces) == n_bytes:
        return pieces
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        ends = [len(text[:end].encode("utf-8")) for _, end in offsets[:len(tokens)]]
        ends[-1:] = [n_bytes] if ends else []
        return [b - a for a, b in zip([0] + ends[:-1], ends)]
    raise ValueError(f"this tokenizer's pieces spell {sum(pieces)} bytes of a {n_bytes}-byte text and it gives no "
                     "character offsets")


def score_text(lm, text: str, eval_context: int | None = None, max_eval_tokens: int | None = None) -> dict:
    """Log-likelihood (nats) of a text under `lm` (a models.LanguageModel) with the number of tokens scored and
    the UTF-8 bytes they cover (`scored_tokens`: with `max_eval_tokens`, a named deviation, only the first ones)."""
    tokens, n_bytes = scored_tokens(lm.tokenizer, text, max_eval_tokens)
    window = min(eval_context or lm.context_length, lm.context_length)
    loglik = loglikelihood_rolling(lm.model, tokens, lm.prefix_token_id, window)
    return {"loglik": loglik, "n_tokens": len(tokens), "n_bytes": n_bytes}


def bits_per_byte(loglik: float, n_bytes: int) -> float:
    """Bits per byte of a log-likelihood in nats over `n_bytes` UTF-8 bytes: -loglik / n_bytes / ln 2, the one
    definition every score here goes through (elementwise on numpy arrays and pandas Series alike)."""
    return -loglik / n_bytes / math.log(2)


def domain_bpb(results: pd.DataFrame) -> pd.DataFrame:
    """bpb per (domain, k) from a long frame with columns doc_id, domain, k, loglik, n_bytes: -sum LL / sum bytes /
    ln 2. ValueError when a document has two rows at one k."""
    if "doc_id" in results:
        refuse_duplicates(results)
    g = results.groupby(["domain", "k"], as_index=False)[["loglik", "n_bytes"]].sum()
    g["bpb"] = bits_per_byte(g["loglik"], g["n_bytes"])
    return g[["domain", "k", "bpb"]]


def pile_weights(domains, pile_set_names: dict[str, str]) -> pd.Series:
    """Weight of each domain in the Pile aggregate, summing to 1 over `domains`: the Pile weight of the task it
    stands in for, shared equally by the domains standing in for one task, renormalised over the tasks present."""
    tasks = pd.Series({d: pile_set_names.get(d, d) for d in domains}, dtype=object)
    share = tasks.map(tasks.value_counts())
    weights = tasks.map(lambda t: PILE_WEIGHTS.get(t, 0.0)) / share
    if weights.sum() == 0:  # no domain maps to a Pile task: plain mean
        weights[:] = 1.0
    return weights / weights.sum()


def pile_weighted(bpb_by_domain: pd.Series, pile_set_names: dict[str, str]) -> float:
    """Pile-weighted mean of domain bpbs (`pile_weights`)."""
    return float((bpb_by_domain * pile_weights(bpb_by_domain.index, pile_set_names)).sum())


def bpb_table(results: pd.DataFrame, pile_set_names: dict[str, str]) -> pd.DataFrame:
    """Wide table: rows are domains plus 'Pile-weighted', columns are k."""
    wide = domain_bpb(results).pivot(index="domain", columns="k", values="bpb")
    wide.loc["Pile-weighted"] = [pile_weighted(wide[k], pile_set_names) for k in wide.columns]
    return wide


def clusters(groups) -> list[np.ndarray]:
    """Positions of each distinct value of `groups`, in first-seen order."""
    codes, first = pd.factorize(pd.Series(list(groups)))
    return [np.flatnonzero(codes == c) for c in range(len(first))]


def cluster_draw(rng: np.random.Generator, groups: list[np.ndarray]) -> np.ndarray:
    """Positions of one two-stage bootstrap draw: groups with replacement, then members within each drawn group."""
    picked = rng.integers(0, len(groups), len(groups))
    return np.concatenate([groups[g][rng.integers(0, groups[g].size, groups[g].size)] for g in picked])


def bootstrap_bpb(results: pd.DataFrame, pile_set_names: dict[str, str], samples: int = 1000,
                  seed: int = 0, quantiles=PAPER_QUANTILES) -> pd.DataFrame:
    """Bootstrap within each domain, as the paper, but two-stage (content groups, then documents): quantile
    intervals (the paper's 10-90 % by default) of each domain's bpb and of the Pile-weighted aggregate, at every
    k. Columns domain, k, low, high; low and high are NaN where the draws have no spread (a domain of one
    document; the aggregate when every domain has one). ValueError when a document has two rows at one k."""
    refuse_duplicates(results)
    rng = np.random.default_rng(seed)
    ll = results.pivot(index="doc_id", columns="k", values="loglik")
    first = results.groupby("doc_id").first()
    nb, domain_of = first["n_bytes"], first["domain"]
    group_of = first["group"] if "group" in first else pd.Series(first.index, index=first.index)
    by_domain = {d: (np.asarray(docs), clusters(group_of.loc[docs])) for d, docs in
                 domain_of.groupby(domain_of).groups.items()}
    draws = {d: [] for d in sorted(by_domain)}
    draws["Pile-weighted"] = []
    for _ in range(samples):
        per_domain = {}
        for domain, (docs, groups) in by_domain.items():
            pick = docs[cluster_draw(rng, groups)]
            per_domain[domain] = bits_per_byte(ll.loc[pick].sum(), nb.loc[pick].sum())
        frame = pd.DataFrame(per_domain).T  # domains x k
        for domain in per_domain:
            draws[domain].append(frame.loc[domain])
        draws["Pile-weighted"].append(pd.Series({k: pile_weighted(frame[k], pile_set_names) for k in frame}))
    rows = []
    for name, series in draws.items():
        stacked = pd.DataFrame(series)
        for k in stacked.columns:
            lo, hi = interval_or_nan(stacked[k].to_numpy(dtype=float), quantiles)
            rows.append({"domain": name, "k": k, "low": lo, "high": hi})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- paired changes
def relative_change(before, after):
    """Relative change in percent, 100 * (after / before - 1); negative means fewer bits per byte (better)."""
    return 100 * (after / before - 1)


def documents_at(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per document (index doc_id: domain, group, loglik, n_bytes, bpb) at neighbour count k of a long frame."""
    if "group" not in frame:
        frame = frame.assign(group=frame["doc_id"])
    at_k = frame[frame["k"] == k]
    refuse_duplicates(at_k)
    docs = at_k.set_index("doc_id")[["domain", "group", "loglik", "n_bytes"]]
    return docs.assign(bpb=bits_per_byte(docs["loglik"], docs["n_bytes"]))


def bootstrap_draws(values, samples: int = 1000, seed: int = 0, groups=None) -> np.ndarray:
    """`samples` bootstrap means of `values` (shape (samples,)). With `groups` (one label per value) the bootstrap
    is two-stage: groups with replacement, then values within each drawn group."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    if groups is None:
        return values[rng.integers(0, values.size, (samples, values.size))].mean(axis=1)
    members = clusters(groups)
    return np.array([values[cluster_draw(rng, members)].mean() for _ in range(samples)])


def bootstrap_p_value(draws) -> float:
    """Two-sided bootstrap p-value of "the mean is zero": 2 * min(share of draws <= 0, share >= 0), each share
    with the +1 correction ((count + 1) / (draws + 1)), so it is never 0; at most 1."""
    draws = np.asarray(draws, dtype=float)
    below, above = int((draws <= 0).sum()), int((draws >= 0).sum())
    return float(min(1.0, 2 * (min(below, above) + 1) / (draws.size + 1)))


def interval_or_nan(draws, quantiles) -> tuple[float, float]:
    """(low, high) quantiles of `draws`, or (NaN, NaN) when the draws have no spread (one document): a
    zero-width "interval" is no interval and is neither tabulated nor drawn as one."""
    low, high = np.quantile(draws, quantiles)
    return (float("nan"), float("nan")) if np.ptp(draws) == 0 else (float(low), float(high))


def bootstrap_mean(values, samples: int = 1000, seed: int = 0, quantiles=PAPER_QUANTILES,
                   groups=None) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` with a bootstrap interval (`bootstrap_draws`; the paper's 10-90 %
    by default, a description: a verdict comes from `mean_change` or `paired_change`)."""
    draws = bootstrap_draws(values, samples, seed, groups)
    low, high = np.quantile(draws, quantiles)
    return float(np.mean(np.asarray(values, dtype=float))), float(low), float(high)


def signed(x: float, decimals: int = 1) -> str:
    """A number with its sign, never losing it: '+1.8', '-3.7'; a value that rounds to zero gets more decimals
    until it does not ('-0.003'), up to 4 ('-0.0000'); exactly zero is '0.0'."""
    if x == 0:
        return f"{0:.{decimals}f}"
    for d in range(decimals, 5):
        text = f"{x:+.{d}f}"
        if text.strip("+-0.") or d == 4:
            return text
    return text


@dataclass(frozen=True)
class PairedChange:
    """B against A on the same documents. `percent*`: mean over documents of each document's relative change
    of bits per byte (content groups resampled across all domains, then documents within them, so one document
    per domain still gives an interval), with the 95 % interval (`percent_low`, `percent_high`: the verdict's)
    and the paper's 10-90 % (`percent_p10`, `percent_p90`); `p_value`: the two-sided bootstrap p-value of the
    same draws; `bpb*`: the same for the change in bits per byte (95 %); `pile*`: the Pile-weighted aggregate's
    relative change (groups resampled within each domain; NaN bounds when every domain has one document);
    `plain*`: the plain mean over domains of each domain's bits per byte, the same resampling."""
    n_documents: int
    n_domains: int
    n_groups: int  # independent sources (content groups) behind the documents
    n_differ: int  # documents whose change exceeds DIFFERENCE_TOLERANCE
    n_sources_differ: int  # sources behind those documents
    percent: float
    percent_low: float
    percent_high: float
    percent_p10: float
    percent_p90: float
    p_value: float
    samples: int
    bpb: float
    bpb_low: float
    bpb_high: float
    pile_before: float
    pile_after: float
    pile: float
    pile_low: float
    pile_high: float
    share_lower: float  # share of documents whose bits per byte fell
    plain_before: float
    plain_after: float
    plain: float
    plain_low: float
    plain_high: float

    @property
    def shortfall(self) -> str | None:
        """Why no interval is claimed (too few documents that differ, too few sources), or None."""
        if self.n_differ < MIN_DOCUMENTS:
            return (f"{self.n_differ} of {self.n_documents} documents differ, fewer than the {MIN_DOCUMENTS} a "
                    f"verdict needs")
        if self.n_sources_differ < MIN_SOURCES:
            return (f"the documents that differ come from {self.n_sources_differ} source, fewer than the "
                    f"{MIN_SOURCES} a verdict needs")
        return None

    @property
    def excludes_zero(self) -> bool:
        """The 95 % interval excludes zero, on enough evidence (`shortfall` is None); not yet a verdict."""
        return self.shortfall is None and (self.percent_high < 0 or self.percent_low > 0)

    @property
    def family_p(self) -> float:
        """`p_value` after Bonferroni's correction for the landing page's FAMILY_CLAIMS claims."""
        return min(1.0, self.p_value * FAMILY_CLAIMS)

    @property
    def resolved(self) -> bool:
        """The verdict: enough evidence, the 95 % interval excludes zero, and `family_p` < ALPHA. Every verdict
        word of the book (report.verdict, `describe`) is this property, so a chapter and the landing page
        cannot disagree."""
        return self.excludes_zero and self.family_p < ALPHA

    def verdict_text(self) -> str:
        """The verdict in words with its reason: 'resolved' or 'not resolved', never an interval below the
        minimum evidence."""
        family = f"Bonferroni's correction for the landing page's {FAMILY_CLAIMS} claims"
        if self.shortfall:  # `describe` has already said how many documents and sources differ
            return (f"too few to say whether the change excludes zero (a verdict needs {MIN_DOCUMENTS} documents "
                    f"that differ, from {MIN_SOURCES} sources): not resolved")
        if not self.excludes_zero:
            return (f"the 95 % interval includes zero (p = {self.p_value:.3f}): not resolved, this run cannot tell "
                    f"it from no change")
        if 2 / (self.samples + 1) * FAMILY_CLAIMS >= ALPHA:
            return (f"the 95 % interval excludes zero, but {self.samples} bootstrap draws cannot give a p-value "
                    f"below {ALPHA} after {family}: not resolved")
        if not self.resolved:
            return (f"the 95 % interval excludes zero, but p = {self.p_value:.3f} is {self.family_p:.3f} after "
                    f"{family}, not below {ALPHA}: not resolved")
        return (f"the 95 % interval excludes zero and p = {self.p_value:.3f} stays below {ALPHA} after {family} "
                f"({self.family_p:.3f}): resolved, {'lower' if self.percent < 0 else 'higher'}")

    def interval_text(self) -> str:
        """'95 % interval -4.6 to -2.9 %, 10-90 % -4.3 to -3.1 %', or why there is none."""
        if self.shortfall:
            return f"no interval: {self.shortfall}"
        return (f"95 % interval {signed(self.percent_low)} to {signed(self.percent_high)} %, 10-90 % "
                f"{signed(self.percent_p10)} to {signed(self.percent_p90)} %")

    def describe(self) -> str:
        """One sentence fragment, the same words in every chapter."""
        interval = ("no interval" if self.shortfall else
                    f"10-90 % bootstrap interval, the paper's, {signed(self.percent_p10)} to "
                    f"{signed(self.percent_p90)} %; 95 %, the verdict's, {signed(self.percent_low)} to "
                    f"{signed(self.percent_high)} %")
        return (f"{signed(self.percent)} % per document on average ({interval}; {self.n_differ} of "
                f"{self.n_documents} documents differ, from {self.n_sources_differ} of {self.n_groups} sources "
                f"(content groups); {self.verdict_text()}; lower on {self.share_lower:.0%} of them), Pile-weighted "
                f"{self.pile_before:.4f} to {self.pile_after:.4f} bits per byte ({signed(self.pile)} %), plain mean "
                f"over domains {self.plain_before:.4f} to {self.plain_after:.4f} ({signed(self.plain)} %)")

    def as_row(self) -> dict:
        """The fields a chapter's table shows, by column name (a missing interval as NO_INTERVAL)."""
        def bound(x):
            return NO_INTERVAL if math.isnan(x) else x

        no = self.shortfall is not None
        return {"documents": self.n_documents, "differ": self.n_differ, "sources": self.n_groups,
                "mean change %": self.percent, "low % (95)": TOO_FEW if no else self.percent_low,
                "high % (95)": TOO_FEW if no else self.percent_high,
                "low % (10)": TOO_FEW if no else self.percent_p10,
                "high % (90)": TOO_FEW if no else self.percent_p90, "p": self.p_value,
                f"p x {FAMILY_CLAIMS}": self.family_p, "resolved": self.resolved, "mean change bpb": self.bpb,
                "Pile-weighted A": self.pile_before, "Pile-weighted B": self.pile_after,
                "Pile-weighted change %": self.pile, "Pile low %": bound(self.pile_low),
                "Pile high %": bound(self.pile_high), "plain mean A": self.plain_before,
                "plain mean B": self.plain_after, "plain change %": self.plain}


def check_paired(before: pd.DataFrame, after: pd.DataFrame) -> None:
    """Raise a one-line ValueError unless both `documents_at` frames hold the same documents with the same
    bytes (the same text scored both ways), naming a document that differs."""
    if set(before.index) != set(after.index):
        odd = sorted(set(before.index) ^ set(after.index), key=str)
        raise ValueError(f"a paired change needs the same documents on both sides: {len(before)} vs {len(after)} "
                         f"documents, {len(odd)} not shared (for example {odd[0]!r})")
    bytes_after = after.loc[before.index, "n_bytes"]
    differ = before.index[before["n_bytes"].to_numpy() != bytes_after.to_numpy()]
    if len(differ):
        doc = differ[0]
        raise ValueError(f"a paired change needs the same text on both sides: document {doc!r} has "
                         f"{before.loc[doc, 'n_bytes']} bytes in A and {after.loc[doc, 'n_bytes']} in B "
                         f"({len(differ)} documents differ)")


def mean_change(values: pd.Series, groups: pd.Series, samples: int = 1000, seed: int = 0) -> PairedChange:
    """The per-document part of a PairedChange for any per-document values (a relative change, or a difference
    of two protocols' relative changes; index doc_id, `groups` its sources): mean, both intervals, p-value, the
    documents that differ and their sources, under the same verdict rule. The aggregate fields are NaN."""
    values, groups = pd.Series(values, dtype=float), pd.Series(groups).loc[values.index]
    draws = bootstrap_draws(values, samples, seed, groups)
    (low, high), (p10, p90) = np.quantile(draws, VERDICT_QUANTILES), np.quantile(draws, PAPER_QUANTILES)
    differ = values.abs() > DIFFERENCE_TOLERANCE
    nan = float("nan")
    return PairedChange(
        n_documents=len(values), n_domains=0, n_groups=int(groups.nunique()), n_differ=int(differ.sum()),
        n_sources_differ=int(groups[differ].nunique()), percent=float(values.mean()), percent_low=float(low),
        percent_high=float(high), percent_p10=float(p10), percent_p90=float(p90), p_value=bootstrap_p_value(draws),
        samples=samples, bpb=nan, bpb_low=nan, bpb_high=nan, pile_before=nan, pile_after=nan, pile=nan, pile_low=nan,
        pile_high=nan, share_lower=float((values < 0).mean()), plain_before=nan, plain_after=nan, plain=nan,
        plain_low=nan, plain_high=nan)


def paired_change(before: pd.DataFrame, after: pd.DataFrame, pile_set_names: dict[str, str],
                  samples: int = 1000, seed: int = 0) -> PairedChange:
    """Compare two scorings of the same documents (`documents_at` frames: A = `before`, B = `after`). ValueError
    when the two sides differ in documents or in a document's bytes."""
    check_paired(before, after)
    after = after.loc[before.index]
    percent = relative_change(before["bpb"], after["bpb"])
    groups = before["group"]
    per_document = mean_change(percent, groups, samples, seed)
    delta, delta_lo, delta_hi = bootstrap_mean(after["bpb"] - before["bpb"], samples, seed, VERDICT_QUANTILES, groups)
    # Aggregates over domains (Pile-weighted, plain mean), groups then documents resampled within each domain
    # (the paper's bootstrap is within domain), paired: the same draw scores both sides. Draw 0 is the data.
    rng = np.random.default_rng(seed)
    domains = sorted(before["domain"].unique())
    weights = pile_weights(domains, pile_set_names).loc[domains].to_numpy()
    members = {d: np.flatnonzero((before["domain"] == d).to_numpy()) for d in domains}
    member_groups = {d: clusters(np.asarray(groups)[rows]) for d, rows in members.items()}
    ll = {"a": before["loglik"].to_numpy(), "b": after["loglik"].to_numpy()}
    nb = before["n_bytes"].to_numpy()
    bpb = {side: np.zeros((samples + 1, len(domains))) for side in ll}
    for s in range(samples + 1):
        for j, d in enumerate(domains):
            rows = members[d] if s == 0 else members[d][cluster_draw(rng, member_groups[d])]
            for side in ll:
                bpb[side][s, j] = bits_per_byte(ll[side][rows].sum(), nb[rows].sum())
    pile = {side: values @ weights for side, values in bpb.items()}
    plain = {side: values.mean(axis=1) for side, values in bpb.items()}
    pile_change, plain_change = relative_change(pile["a"], pile["b"]), relative_change(plain["a"], plain["b"])
    pile_lo, pile_hi = interval_or_nan(pile_change[1:], VERDICT_QUANTILES)
    plain_lo, plain_hi = interval_or_nan(plain_change[1:], VERDICT_QUANTILES)
    return dataclasses.replace(
        per_document, n_domains=len(domains), bpb=delta, bpb_low=delta_lo, bpb_high=delta_hi,
        pile_before=float(pile["a"][0]), pile_after=float(pile["b"][0]), pile=float(pile_change[0]), pile_low=pile_lo, pile_high=pile_hi, share_lower=float((after["bpb"] < before["bpb"]).mean()),
        plain_before=float(plain["a"][0]), plain_after=float(plain["b"][0]), plain=float(plain_change[0]),
        plain_low=plain_lo, plain_high=plain_hi)


def document_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.Series:
    """Each document's relative change of bits per byte (%), B against A; ValueError as `paired_change` when the
    sides differ in documents or bytes."""
    check_paired(before, after)
    return relative_change(before["bpb"], after.loc[before.index, "bpb"])


def domain_changes(before: pd.DataFrame, after: pd.DataFrame, samples: int = 1000, seed: int = 0,
                   quantiles=VERDICT_QUANTILES) -> pd.DataFrame:
    """Per domain: the mean of each document's relative change of bits per byte (B against A, %), with the
    same two-stage interval as `paired_change` within the domain (its sources, then documents; 95 % by default);
    a domain with one source gets the spread of its documents, not evidence, and one with one document gets NaN
    bounds (no interval). Columns: change %, low %, high %, documents, sources."""
    percent = document_changes(before, after)
    rows = {}
    for domain, values in percent.groupby(before.loc[percent.index, "domain"]):
        groups = before.loc[values.index, "group"]
        low, high = interval_or_nan(bootstrap_draws(values, samples, seed, groups), quantiles)
        mean = float(values.mean())
        rows[domain] = {"change %": mean, "low %": low, "high %": high, "documents": len(values),
                        "sources": groups.nunique()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("domain")


def ttt_change(frame: pd.DataFrame, k: int, pile_set_names: dict[str, str], samples: int = 1000,
               seed: int = 0) -> PairedChange:
    """TTT-NN at k against no training (k = 0), on the documents of one run's long frame."""
    return paired_change(documents_at(frame, 0), documents_at(frame, k), pile_set_names, samples, seed)
