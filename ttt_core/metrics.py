"""Bits per byte, defined once, exactly as lm-evaluation-harness's rolling log-likelihood used by the paper.

A document is tokenised without special tokens and cut into disjoint windows of the model's context; the
first window is prefixed with the end-of-text (or BOS) token, the last is left-filled with preceding context,
and every token is scored exactly once. A domain's bpb is -sum(LL) / sum(UTF-8 bytes) / ln 2 over its
documents (long documents weigh more), and the Pile aggregate is the Pile-weighted mean of domain bpbs.
"""
from __future__ import annotations

import math

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


@torch.no_grad()
def loglikelihood_rolling(model, tokens: list[int], prefix_token: int, max_len: int) -> float:
    """Sum of natural-log probabilities of every token of `tokens`, each scored once."""
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for context, targets in rolling_windows(tokens, prefix_token, max_len):
        inputs = (context + targets)[:-1]
        logits = model(input_ids=torch.tensor([inputs], device=device)).logits[0, -len(targets):]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        total += logprobs.gather(1, torch.tensor(targets, device=device)[:, None]).sum().item()
    return total


def score_text(lm, text: str, eval_context: int | None = None, max_eval_tokens: int | None = None) -> dict:
    """Log-likelihood of a text under `lm` (a models.LanguageModel) with its token and byte counts."""
    tokens = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_eval_tokens is not None and len(tokens) > max_eval_tokens:
        tokens = tokens[:max_eval_tokens]  # a named deviation; bytes then count only the scored text
        text = lm.tokenizer.decode(tokens)
    window = min(eval_context or lm.context_length, lm.context_length)
    loglik = loglikelihood_rolling(lm.model, tokens, lm.prefix_token_id, window)
    return {"loglik": loglik, "n_tokens": len(tokens), "n_bytes": len(text.encode("utf-8"))}


def bits_per_byte(loglik: float, n_bytes: int) -> float:
    return -loglik / n_bytes / math.log(2)


def domain_bpb(results: pd.DataFrame) -> pd.DataFrame:
    """bpb per (domain, k) from a long frame with columns domain, k, loglik, n_bytes: -sum LL / sum bytes / ln 2."""
    g = results.groupby(["domain", "k"], as_index=False)[["loglik", "n_bytes"]].sum()
    g["bpb"] = -g["loglik"] / g["n_bytes"] / math.log(2)
    return g[["domain", "k", "bpb"]]


def pile_weighted(bpb_by_domain: pd.Series, pile_set_names: dict[str, str]) -> float:
    """Pile-weighted mean of domain bpbs, renormalised over the domains present (several mini-Pile domains
    can stand in for one Pile task; they share its weight equally)."""
    tasks = pd.Series({d: pile_set_names.get(d, d) for d in bpb_by_domain.index})
    share = tasks.map(tasks.value_counts())
    weights = tasks.map(lambda t: PILE_WEIGHTS.get(t, 0.0)) / share
    if weights.sum() == 0:  # no domain maps to a Pile task: plain mean
        weights[:] = 1.0
    return float((bpb_by_domain * weights).sum() / weights.sum())


def bpb_table(results: pd.DataFrame, pile_set_names: dict[str, str]) -> pd.DataFrame:
    """Wide table: rows are domains plus 'Pile-weighted', columns are k."""
    wide = domain_bpb(results).pivot(index="domain", columns="k", values="bpb")
    wide.loc["Pile-weighted"] = [pile_weighted(wide[k], pile_set_names) for k in wide.columns]
    return wide


def bootstrap_bpb(results: pd.DataFrame, pile_set_names: dict[str, str], samples: int = 1000,
                  seed: int = 0, quantiles=(0.1, 0.9)) -> pd.DataFrame:
    """Bootstrap over documents (resampled within each domain) as the paper: 10-90% quantile intervals of
    each domain's bpb and of the Pile-weighted aggregate, at every k."""
    rng = np.random.default_rng(seed)
    ll = results.pivot_table(index="doc_id", columns="k", values="loglik")
    nb = results.groupby("doc_id")["n_bytes"].first()
    domain_of = results.groupby("doc_id")["domain"].first()
    draws = {d: [] for d in sorted(domain_of.unique())}
    draws["Pile-weighted"] = []
    for _ in range(samples):
        per_domain = {}
        for domain, docs in domain_of.groupby(domain_of).groups.items():
            pick = rng.choice(np.asarray(docs), size=len(docs), replace=True)
            per_domain[domain] = -ll.loc[pick].sum() / nb.loc[pick].sum() / math.log(2)
        frame = pd.DataFrame(per_domain).T  # domains x k
        for domain in per_domain:
            draws[domain].append(frame.loc[domain])
        draws["Pile-weighted"].append(pd.Series({k: pile_weighted(frame[k], pile_set_names) for k in frame}))
    rows = []
    for name, series in draws.items():
        stacked = pd.DataFrame(series)
        for k in stacked.columns:
            lo, hi = np.quantile(stacked[k], quantiles)
            rows.append({"domain": name, "k": k, "low": lo, "high": hi})
    return pd.DataFrame(rows)
