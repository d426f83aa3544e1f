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
documents scored both ways, the per-document change summarised with a 10-90 % bootstrap interval.
"""
from __future__ import annotations

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


# ---------------------------------------------------------------------------------------------- paired changes
def relative_change(before, after):
    """Relative change in percent, 100 * (after / before - 1); negative means fewer bits per byte (better)."""
    return 100 * (after / before - 1)


def documents_at(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per document (index doc_id: domain, loglik, n_bytes, bpb) at neighbour count k of a long frame."""
    docs = frame[frame["k"] == k].set_index("doc_id")[["domain", "loglik", "n_bytes"]]
    if docs.index.has_duplicates:
        raise ValueError("a document appears twice at the same k; pass one run's rows")
    return docs.assign(bpb=-docs["loglik"] / docs["n_bytes"] / math.log(2))


def bootstrap_mean(values, samples: int = 1000, seed: int = 0, quantiles=(0.1, 0.9)) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` with a bootstrap interval, values resampled with replacement."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    draws = values[np.random.default_rng(seed).integers(0, values.size, (samples, values.size))].mean(axis=1)
    low, high = np.quantile(draws, quantiles)
    return float(values.mean()), float(low), float(high)


@dataclass(frozen=True)
class PairedChange:
    """B against A on the same documents. `percent*`: mean over documents of each document's relative change
    of bits per byte (documents resampled across all domains, so one document per domain still gives an
    interval); `bpb*`: the same for the change in bits per byte; `pile*`: the Pile-weighted aggregate's relative
    change (documents resampled within each domain: degenerate with one document per domain)."""
    n_documents: int
    n_domains: int
    percent: float
    percent_low: float
    percent_high: float
    bpb: float
    bpb_low: float
    bpb_high: float
    pile_before: float
    pile_after: float
    pile: float
    pile_low: float
    pile_high: float
    share_lower: float  # share of documents whose bits per byte fell

    @property
    def excludes_zero(self) -> bool:
        """One document has no interval: never a finding."""
        return self.n_documents > 1 and (self.percent_high < 0 or self.percent_low > 0)

    def describe(self) -> str:
        """One sentence fragment, the same words in every chapter."""
        verdict = ("the interval excludes zero" if self.excludes_zero else
                   "one document gives no interval, so this is not a finding" if self.n_documents < 2 else
                   "the interval includes zero, so this run cannot tell it from no change")
        return (f"{self.percent:+.1f} % per document on average (10-90 % bootstrap interval {self.percent_low:+.1f} "
                f"to {self.percent_high:+.1f} %, {self.n_documents} documents; {verdict}; lower on "
                f"{self.share_lower:.0%} of them), Pile-weighted {self.pile_before:.4f} to {self.pile_after:.4f} "
                f"bits per byte ({self.pile:+.1f} %)")

    def as_row(self) -> dict:
        return {"documents": self.n_documents, "mean change %": self.percent, "low %": self.percent_low,
                "high %": self.percent_high, "excludes 0": self.excludes_zero, "mean change bpb": self.bpb,
                "Pile-weighted A": self.pile_before, "Pile-weighted B": self.pile_after,
                "Pile-weighted change %": self.pile, "Pile low %": self.pile_low, "Pile high %": self.pile_high}


def paired_change(before: pd.DataFrame, after: pd.DataFrame, pile_set_names: dict[str, str],
                  samples: int = 1000, seed: int = 0, quantiles=(0.1, 0.9)) -> PairedChange:
    """Compare two scorings of the same documents (`documents_at` frames: A = `before`, B = `after`)."""
    if set(before.index) != set(after.index):
        raise ValueError(f"a paired change needs the same documents on both sides: {len(before)} vs {len(after)} "
                         f"documents, {len(set(before.index) ^ set(after.index))} not shared")
    after = after.loc[before.index]
    percent = relative_change(before["bpb"], after["bpb"])
    pct, pct_lo, pct_hi = bootstrap_mean(percent, samples, seed, quantiles)
    delta, delta_lo, delta_hi = bootstrap_mean(after["bpb"] - before["bpb"], samples, seed, quantiles)
    # Pile-weighted aggregate, documents resampled within their domain (the paper's bootstrap), paired.
    rng = np.random.default_rng(seed)
    domains = sorted(before["domain"].unique())
    weights = pile_weights(domains, pile_set_names).loc[domains].to_numpy()
    sums = {side: np.zeros((samples + 1, len(domains), 2)) for side in ("a", "b")}
    for j, domain in enumerate(domains):
        rows = np.flatnonzero((before["domain"] == domain).to_numpy())
        picks = np.vstack([rows, rows[rng.integers(0, rows.size, (samples, rows.size))]])  # row 0: no resampling
        for side, frame in (("a", before), ("b", after)):
            ll, nb = frame["loglik"].to_numpy()[picks], frame["n_bytes"].to_numpy()[picks]
            sums[side][:, j] = np.stack([ll.sum(axis=1), nb.sum(axis=1)], axis=1)
    pile = {side: (-s[..., 0] / s[..., 1] / math.log(2)) @ weights for side, s in sums.items()}
    pile_change = relative_change(pile["a"], pile["b"])
    pile_lo, pile_hi = np.quantile(pile_change[1:], quantiles)
    return PairedChange(len(before), len(domains), pct, pct_lo, pct_hi, delta, delta_lo, delta_hi,
                        float(pile["a"][0]), float(pile["b"][0]), float(pile_change[0]), float(pile_lo),
                        float(pile_hi), float((after["bpb"] < before["bpb"]).mean()))


def document_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.Series:
    """Each document's relative change of bits per byte (%), B against A, on the documents both sides share."""
    shared = before.index.intersection(after.index)
    return relative_change(before.loc[shared, "bpb"], after.loc[shared, "bpb"])


def ttt_change(frame: pd.DataFrame, k: int, pile_set_names: dict[str, str], samples: int = 1000,
               seed: int = 0) -> PairedChange:
    """TTT-NN at k against no training (k = 0), on the documents of one run's long frame."""
    return paired_change(documents_at(frame, 0), documents_at(frame, k), pile_set_names, samples, seed)
