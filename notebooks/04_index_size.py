# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Index size and quality
#
# ```{glue:md} finding
# :format: myst
# ```

# %% tags=["parameters", "remove-cell"]
# This chapter's own parameters. The shared ones (k, model, corpus, ...: ttt_core.config.StudyConfig, listed on
# the book's Parameters page) are passed the same way: papermill -p k 5
fractions = "0.01,0.03,0.1,0.3,1.0"  # nested subsets of the train split: distance curves and TTT-NN at each
r_max = 50  # neighbours per query for the distance curves
max_queries = 200  # held-out test chunks used as queries (distance curves, retriever agreement)
gain_k = 5  # neighbours trained on at every index size and by every retriever
gain_docs_per_domain = 1
# The retrievers are compared on one nested subset: the largest one that exact MiniLM embeds within the budget.
compare_fraction = 0.03
# Compared with the run's own retriever, on the same documents: an embedder name (its exact dense index), 'bm25',
# or 'rerank' (the run's `rerank_from` candidates re-ranked by `reference_embedder`); e.g. add 'mpnet'
compare_retrievers = "minilm,bm25,rerank"
reference_embedder = "minilm"  # the exact dense index the others' neighbours are measured against
agreement_k = 10  # recall@k of the reference's exact neighbours
latency_queries = 3  # held-out queries timed per retriever on the full index (re-ranking embeds their candidates)
base_model = "gemma3-270m"  # a pretrained base model for the nearest-vs-random control on the full index ("" skips)
base_k = 5  # the scaling chapter trains Gemma with as many neighbours on the same documents: one shared run
params_file = ""  # the parameter file this run was given (shown in "Reproduce this page")

# %% tags=["hide-input", "remove-output"]
# Before the cell binds any other name: a parameter this notebook does not declare is a typo, not a no-op.
from ttt_core.params import notebook_config

config = notebook_config(globals(), "04_index_size")

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

import ttt_core
from ttt_core.decontaminate import clean_train_mask
from ttt_core.index import exact_duplicates, indexed_mask, load_embeddings, nested_subset
from ttt_core.metrics import document_changes, documents_at, mean_change, signed
from ttt_core.models import check_model_name, weights_identity
from ttt_core.plots import use_report_style
from ttt_core.report import (glue_finding, glue_text, interval_text, reproduce, show_configuration, show_finding,
                             show_table)
from ttt_core.results import long_frame
from ttt_core.retrievers import EmbeddingCache, memory_bytes, retrieval_agreement, search_texts
from ttt_core.study import compare, prepare, run_ttt, ttt_change, vary

use_report_style()
# This chapter's own parameters are checked before any work, as StudyConfig's are.
sizes = [float(f) for f in str(fractions).split(",")]  # papermill and YAML give a single 1.0 as a float
if len(sizes) < 2 or sizes != sorted(set(sizes)) or not 0 < sizes[0] or sizes[-1] != 1.0:
    raise ValueError(f"invalid fractions={fractions!r}: expected two or more increasing shares in (0, 1], the "
                     f"last 1.0 (the whole index), e.g. '0.01,0.1,1.0'")
if compare_fraction not in sizes:
    raise ValueError(f"invalid compare_fraction={compare_fraction!r}: expected one of fractions ({fractions})")
specs = [s for s in str(compare_retrievers).split(",") if s]
for name, values in (("compare_retrievers", specs), ("reference_embedder", [reference_embedder])):
    for spec in values:
        if spec not in ("bm25", "rerank"):
            try:
                check_model_name(spec, "embedder")
            except ValueError as err:
                raise ValueError(f"invalid {name}={locals()[name]!r}: {spec!r} is neither 'bm25', 'rerank' nor an "
                                 f"embedder ({err})") from None
if "rerank" in specs and max(agreement_k, gain_k) > config.rerank_candidates:
    raise ValueError(f"invalid agreement_k={agreement_k} or gain_k={gain_k}: the re-ranker returns at most "
                     f"rerank_candidates={config.rerank_candidates} neighbours")


def share(fraction: float) -> str:
    """A share of the index as a label: '3%', or '0.25%' below one per cent (never '0%')."""
    return f"{fraction:.0%}" if fraction >= 0.01 else f"{fraction:.2%}"


if config.retriever != "dense":
    raise ValueError(f"invalid retriever={config.retriever!r} for this chapter: its distance curves live in the "
                     "run's embedding space, so the run's own retriever must be 'dense'")
study = prepare(config)
# The decontaminated index and its vectors (the full train split's embeddings, less the left-out chunks).
full, embeddings = study.index, load_embeddings(config, study.corpus)[indexed_mask(config, study.corpus)]
# The same number of held-out queries from every domain (as many as exist, up to max_queries in all).
queries_docs = study.corpus.test_documents(max(1, max_queries // len(study.corpus.domains)), config.seed)
query_texts = [d["text"] for d in queries_docs]
queries = study.embedder.encode(query_texts, config.embed_max_tokens, progress=True)
query_domains = np.array([d["domain"] for d in queries_docs])
corpus_domains = np.asarray(study.corpus.dataset["domain"])  # the domain of every corpus row
row_domains = corpus_domains[full.rows]


def reachable_r(keep: np.ndarray, fraction: float) -> int:
    """Neighbours per query that an index subset can return, also with any query's domain left out."""
    outside = [int((keep & (row_domains != d)).sum()) for d in np.unique(query_domains)]
    if min(outside) < 1:
        raise ValueError(f"invalid fractions={fractions!r}: {share(fraction)} of the index holds {int(keep.sum())} "
                         f"chunks, none outside some query's domain; use larger shares")
    return min([r_max] + outside)


# Distance to the r-th neighbour for in-domain and out-of-domain queries, per index size.
curves, duplicates = [], []
clean = clean_train_mask(config, study.corpus)  # over the train split: which rows the full index holds
for fraction in sizes:
    # The rows of the index that TTT-NN runs with at this size (`indexed_mask`: the nested share of the train
    # split, less decontamination), as a mask over the full index's rows.
    keep = nested_subset(len(clean), fraction, config.seed)[clean]
    index, r_here = full.subset(keep, embeddings), reachable_r(keep, fraction)
    for r, d in enumerate(index.distance_profile(queries, r_here), start=1):
        curves.append({"fraction": fraction, "r": r, "distance": d, "queries": "held-out, in-domain"})
    duplicates.append({"fraction": fraction, "indexed chunks": len(index), "r up to": r_here,
                       "exact duplicates (d < 1e-4)": exact_duplicates(index, queries),
                       "mean distance to 1st neighbour": index.distance_profile(queries, 1)[0]})
    out_of_domain = []
    for domain in np.unique(query_domains):
        other = keep & (row_domains != domain)
        mask = query_domains == domain
        out_of_domain.append(full.subset(other, embeddings).distance_profile(queries[mask], r_here) * mask.sum())
    for r, d in enumerate(np.sum(out_of_domain, axis=0) / len(queries), start=1):
        curves.append({"fraction": fraction, "r": r, "distance": d, "queries": "out-of-domain (domain left out)"})
curves = pd.DataFrame(curves)
indexed_chunks = {row["fraction"]: row["indexed chunks"] for row in duplicates}


def arm(**changes):
    """A run of this chapter (gain_k neighbours, gain_docs_per_domain documents) with `changes`: its study and
    rows. Runs that the other chapters hold (the full index, its random control) are cut from their rows."""
    sub = vary(study, k=gain_k, docs_per_domain=gain_docs_per_domain, **changes)
    return sub, run_ttt(sub)


def gain_row(sub, rows) -> dict:
    change = ttt_change(sub, rows)
    return {"bpb k=0": change.pile_before, f"bpb k={gain_k}": change.pile_after, "Pile-weighted gain %": -change.pile,
            "mean change %": change.percent, "low %": change.percent_low, "high %": change.percent_high,
            "change": change}


def advantage(nearest_rows, random_rows) -> pd.Series:
    """Each document's relative change of bits per byte, nearest neighbours against random chunks of its own
    domain at the same step budget (negative: retrieval helps beyond the domain)."""
    return document_changes(documents_at(long_frame(random_rows), gain_k), documents_at(long_frame(nearest_rows), gain_k))


# TTT-NN at every index size, and random chunks of the same domain at the smallest and the largest.
gains, size_rows, run_keys = [], {}, {}
for fraction in sizes:
    sub, size_rows[fraction] = arm(index_fraction=fraction)
    gains.append({"model": config.model, "fraction": fraction, "indexed chunks": len(sub.index),
                  **gain_row(sub, size_rows[fraction])})
    run_keys[f"{share(fraction)} index"] = sub.run_key
gains = pd.DataFrame(gains)
small, large = sizes[0], sizes[-1]
size_effect = compare(study, size_rows[small], gain_k, size_rows[large], gain_k)
controls, random_rows, random_changes = {}, {}, {}
for fraction in (small, large):
    sub, random_rows[fraction] = arm(index_fraction=fraction, neighbors="random-domain")
    random_changes[fraction] = ttt_change(sub, random_rows[fraction])
    run_keys[f"{share(fraction)} index, random same-domain chunks"] = sub.run_key
    controls[fraction] = compare(study, random_rows[fraction], gain_k, size_rows[fraction], gain_k)
groups = documents_at(long_frame(size_rows[small]), gain_k)["group"]
growth = mean_change(advantage(size_rows[large], random_rows[large]) - advantage(size_rows[small], random_rows[small]),
                     groups, config.bootstrap_samples, config.seed)
shares = {f: (gains.set_index("fraction").loc[f, "change"].percent, random_changes[f].percent) for f in (small, large)}

# Retrievers on one subset and the same documents: the run's own, and each of compare_retrievers.
def retriever_changes(spec: str) -> dict:
    if spec in ("bm25", "rerank"):
        return {"retriever": spec, "embedder": reference_embedder if spec == "rerank" else config.embedder}
    return {"retriever": "dense", "embedder": spec}


def neighbours_of(sub, texts: list[str], k: int) -> np.ndarray:
    """Corpus rows [len(texts), k] of each text's k nearest under the run's retriever."""
    return search_texts(sub.index, texts, k, sub.embedder, sub.config.embed_max_tokens)[1]


def build_seconds(index) -> float:
    """Seconds its build took: embedding every chunk (dense), tokenising and scoring (BM25), its first stages."""
    if hasattr(index, "stages"):
        return sum(build_seconds(getattr(stage, "index", stage)) for stage in index.stages.values())
    return index.meta.get("embed_seconds", index.meta.get("index_seconds", float("nan")))


reference, reference_rows = arm(index_fraction=compare_fraction, **retriever_changes(reference_embedder))
exact = neighbours_of(reference, query_texts, agreement_k)
retrievers, retriever_rows = [], {}
for spec in dict.fromkeys([config.embedder, *specs]):
    sub, retriever_rows[spec] = arm(index_fraction=compare_fraction, **retriever_changes(spec))
    run_keys[f"{spec} retriever, {share(compare_fraction)} index"] = sub.run_key
    start = time.perf_counter()
    found = neighbours_of(sub, query_texts, agreement_k)
    seconds = time.perf_counter() - start
    agreement = retrieval_agreement(found, exact, query_domains, corpus_domains)
    retrievers.append({"retriever": spec, "indexed chunks": len(sub.index),
                       f"recall@{agreement_k} of exact {reference_embedder}": agreement["recall@k"],
                       "same-domain share": agreement["same_domain"],
                       "indexing chunks per second": sub.index.meta.get("chunks_per_second", float("nan")),
                       "query seconds (warm cache)": seconds / len(query_texts),
                       **gain_row(sub, retriever_rows[spec]),
                       f"vs exact {reference_embedder}": compare(study, reference_rows, gain_k,
                                                                 retriever_rows[spec], gain_k)})
retrievers = pd.DataFrame(retrievers).set_index("retriever")
glue_text("retriever_recall", "; ".join(
    f"{name} {r[f'recall@{agreement_k} of exact {reference_embedder}']:.2f}" for name, r in retrievers.iterrows()))
embedder_effect = compare(study, retriever_rows[config.embedder], gain_k, reference_rows, gain_k)
# The choice of the default: the run's retriever over the whole index against exact reference embeddings over the
# subset they can afford (negative: the default's neighbours help more).
default_choice = compare(study, reference_rows, gain_k, size_rows[large], gain_k)

# The full index: what each retriever costs to build, hold and query (a cold cache for re-ranking).
costs = []
for spec in dict.fromkeys([config.embedder, *[s for s in specs if s != reference_embedder]]):
    sub = vary(study, index_fraction=1.0, **retriever_changes(spec))
    if hasattr(sub.index, "cache"):  # re-ranking: a first query's cost, with a cache of its own that starts empty
        cold = EmbeddingCache(Path(tempfile.mkdtemp()), sub.index.cache.embedder, sub.index.max_tokens, sub.corpus)
        sub = dataclasses.replace(sub, index=dataclasses.replace(sub.index, cache=cold))
    timed = query_texts[:latency_queries]
    start = time.perf_counter()
    neighbours_of(sub, timed, gain_k)
    costs.append({"retriever": spec, "indexed chunks": len(sub.index), "build seconds": build_seconds(sub.index),
                  "memory MB": memory_bytes(sub.index) / 1e6,
                  "query seconds": (time.perf_counter() - start) / max(1, len(timed))})
costs = pd.DataFrame(costs).set_index("retriever")

# A pretrained base model: nearest against random same-domain chunks on the full index.
base = {}
if base_model:
    for rule in ("nearest", "random-domain"):
        sub = vary(study, model=base_model, k=base_k, docs_per_domain=gain_docs_per_domain, neighbors=rule)
        base[rule] = run_ttt(sub)
        run_keys[f"{base_model}, {rule}, full index"] = sub.run_key
        sub.lm = None  # one model in memory at a time
    base_control = compare(study, base["random-domain"], base_k, base["nearest"], base_k)
    base_gain = ttt_change(study, base["nearest"], base_k)

glue_finding("index_size", size_effect, note=f"{share(large)} against {share(small)} of the index, k = {gain_k}")
glue_finding("index_quality", embedder_effect,
             note=f"exact {reference_embedder} against {config.embedder} neighbours from the same "
                  f"{share(compare_fraction)} of the index, k = {gain_k}")
glue_finding("default_choice", default_choice, paper_claim=False,
             note=f"{config.embedder} over the whole index ({indexed_chunks[large]:,} chunks) against exact "
                  f"{reference_embedder} over {share(compare_fraction)} of it ({indexed_chunks[compare_fraction]:,}), "
                  f"k = {gain_k}")
# Retrieval's advantage is a difference of relative changes: its change with the index is in points.
growth_text = (f"Per document, retrieval's advantage with the whole index minus its advantage with {share(small)} of it "
               f"(negative: retrieval adds more with the larger index) is **{signed(growth.percent)} points** "
               f"({growth.interval_text()}; {growth.n_differ} of {growth.n_documents} documents differ, from "
               f"{growth.n_sources_differ} sources; {growth.verdict_text()}).")
glue_text("retrieval_growth", growth_text)

# %% tags=["remove-cell"]
first, last = duplicates[0], duplicates[-1]
paragraphs = [
    (f"Training on neighbours from the whole index ({indexed_chunks[large]:,} chunks) instead of "
     f"{share(small)} of it ({indexed_chunks[small]:,}) changes bits per byte after TTT-NN by "
     f"**{size_effect.describe()}**. With k = {gain_k}, TTT-NN changes bits per byte by "
     + "; ".join(f"{interval_text(c)} with {n:,} chunks" for n, c in zip(gains["indexed chunks"], gains["change"]))
     + " (mean per-document change)."),
    (f"**Does retrieval's share of the gain grow with the index?** Nearest neighbours against random chunks of the "
     f"same domain, on the same documents: {controls[small].describe()} with {indexed_chunks[small]:,} chunks, "
     f"{controls[large].describe()} with {indexed_chunks[large]:,}. " + growth_text + " "
     + "; ".join(f"with {indexed_chunks[f]:,} chunks the nearest neighbours change bits per byte by {n:+.1f} % "
                 f"and random same-domain chunks by {r:+.1f} %" for f, (n, r) in shares.items()) + "."),
    (f"Growing the index from {first['indexed chunks']:,} to {last['indexed chunks']:,} chunks brings the nearest "
     f"neighbour of a held-out query from a mean squared distance of {first['mean distance to 1st neighbour']:.3f} "
     f"to {last['mean distance to 1st neighbour']:.3f} ({config.embedder} space); "
     f"{last['exact duplicates (d < 1e-4)']} of {len(queries)} queries have an exact duplicate in the full index."),
    (f"**Retrievers on the same {retrievers.iloc[0]['indexed chunks']:,} chunks** ({share(compare_fraction)} of the "
     f"index, where exact {reference_embedder} is affordable): "
     + "; ".join(f"{name} finds {r[f'recall@{agreement_k} of exact {reference_embedder}']:.2f} of exact "
                 f"{reference_embedder}'s {agreement_k} nearest, {r['same-domain share']:.0%} from the query's "
                 f"domain" for name, r in retrievers.iterrows())
     + f". Exact {reference_embedder} neighbours instead of {config.embedder} neighbours change bits per byte after "
       f"TTT-NN by **{embedder_effect.describe()}**. The run's retriever over the whole index instead of exact "
       f"{reference_embedder} over the {share(compare_fraction)} it can afford: **{default_choice.describe()}**."),
]
if base:
    paragraphs.append(
        f"**A pretrained base model** ({base_model}, k = {base_k}, full index): TTT-NN changes bits per byte by "
        f"{interval_text(base_gain)}; nearest against random same-domain chunks: {base_control.describe()}.")
show_finding(*paragraphs)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(10, 4.5))
ax.errorbar(gains["indexed chunks"], gains["mean change %"], marker="o", capsize=4, color="black",
            yerr=[gains["mean change %"] - gains["low %"], gains["high %"] - gains["mean change %"]],
            label="nearest neighbours")
for fraction, change in random_changes.items():
    ax.errorbar([indexed_chunks[fraction]], [change.percent], marker="s", capsize=4, color="tab:orange",
                yerr=[[change.percent - change.percent_low], [change.percent_high - change.percent]],
                label="random same-domain chunks" if fraction == small else None)
for _, g in gains.iterrows():
    ax.annotate(f"{g['mean change %']:+.1f} %", (g["indexed chunks"], g["mean change %"]), xytext=(8, 0),
                textcoords="offset points", va="center")
ax.axhline(0, color="grey", lw=0.8, ls="--")
ax.set_xscale("log")
ax.set_xlabel("chunks in the index (log scale; nested subsets of the decontaminated train split)")
ax.set_ylabel(f"bits per byte, change at k={gain_k} (%)")
ax.set_title(f"TTT-NN gain against index size ({config.model}, {config.embedder} retrieval)\n"
             f"mean per-document change with 95 % interval ({gains['change'].iloc[0].n_documents} documents)")
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## How this was run
# The paper claims that "sufficient index quality and size are necessary". We index nested random subsets of the
# train split of the large mini-Pile (each a faiss index built by `ttt_core` from the cached embeddings, from 1 %
# to all of it: two orders of magnitude) and measure, for a fixed set of held-out queries, the mean distance to
# the r-th neighbour, the number of exact duplicates and the same distances for out-of-domain queries (a domain
# left out of the index); and the TTT-NN gain at a fixed k (`gain_k`) on `gain_docs_per_domain` test documents
# per domain, with random chunks of the same domain as a control at the smallest and the largest size. A second
# axis, quality: on one subset small enough for exact MiniLM, every retriever (exact dense indexes, BM25, and
# candidates re-ranked by MiniLM) retrieves for the same documents.

# %% [markdown]
# ## TTT-NN gain against index size
# The figure's numbers, the paired comparison of the largest against the smallest index (each document's bits per
# byte after TTT-NN with the larger index against its bits per byte with the smaller one; negative: the larger
# index helps more) and the controls.

# %% tags=["hide-input"]
show_table(gains.drop(columns="change"), 4)
show_table(pd.DataFrame({f"{share(large)} vs {share(small)} index, k={gain_k}": size_effect.as_row(),
                      **{f"nearest vs random same-domain, {share(f)} index": c.as_row() for f, c in controls.items()},
                      "advantage at the largest minus at the smallest": growth.as_row()}).round(4))

# %% [markdown]
# ## Distance to the r-th neighbour against index size
# Squared L2 distance between normalised embeddings of the run's embedder (0 = same text, 2 = orthogonal); lower
# means closer neighbours. Out-of-domain: each query's own domain is removed from the index, as the paper's
# LAMBADA contrast (queries unlike anything indexed).

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
curves["chunks"] = curves["fraction"].map(indexed_chunks)
for ax, (name, group) in zip(axes, curves.groupby("queries")):
    sns.lineplot(data=group, x="r", y="distance", hue="chunks", palette="viridis", hue_norm=plt.matplotlib.colors.LogNorm(), ax=ax)
    ax.set_title(f"queries: {name}")
    ax.set_xlabel("neighbour rank r")
    ax.set_ylabel("mean squared L2 distance to r-th neighbour")
    ax.legend(title="chunks indexed")
fig.tight_layout()
show_table(pd.DataFrame(duplicates).set_index("fraction"), 4)

# %% [markdown]
# ## Retrievers at equal size
# Every retriever indexes the same nested subset (`compare_fraction`) and retrieves for the same held-out queries
# (recall of the exact reference's neighbours, the share from the query's own domain) and for the same test
# documents (the TTT-NN change, and each paired against the exact reference: negative means it beats the
# reference). Their distances live in different spaces and are not compared.

# %% tags=["hide-input"]
show_table(retrievers.drop(columns=["change", f"vs exact {reference_embedder}"]), 4)
show_table(pd.DataFrame({name: c.as_row() for name, c in retrievers[f"vs exact {reference_embedder}"].items()}), 4)

# %% [markdown]
# ## Recall at every size, with exact MiniLM on a GPU
# Exact MiniLM over the whole index is out of reach on this CPU (~9 chunks/s), so `benchmarks/full_recall.py`
# computes it on a GPU (its docstring gives the three steps) and this section shows the stored result when it was
# measured on this corpus and static embedder: recall@10 of exact MiniLM's neighbours at every index size, for
# many more queries than above. MiniLM's weights travel to the GPU as float16 (computed in float32 there); the
# line above the table says how far that moves the vectors from the CPU's, and how many of the CPU's exact
# neighbours the GPU's exact search finds on the subset where both exist.

# %% tags=["hide-input"]
gpu_recall = Path(ttt_core.__file__).resolve().parents[1] / "benchmarks" / "full_recall.json"
measured = json.loads(gpu_recall.read_text()) if gpu_recall.exists() else None
# Shown only where it measured this run's index and queries: the same corpus, static embedder and settings.
same_inputs = measured is not None and measured["corpus_fingerprint"] == study.corpus.fingerprint and \
    measured["static_embedder"] == weights_identity(config.embedder, "embedder", config.work_path) and \
    "settings" in measured and measured["settings"] == {name: getattr(config, name) for name in measured["settings"]}
if same_inputs:
    check, at = measured["weights check"], f"recall@{measured['k']}"
    recall = f"{at} of exact minilm"
    cpu = check["against the CPU's exact index"]
    glue_text("full_recall", "; ".join(
        f"{r['retriever']} {r[recall]:.2f}" for r in measured["rows"] if r["fraction"] == 1.0))
    display(Markdown(
        f"Measured on {measured['device']['gpu']} ({measured['device']['chunks per second']:,.0f} chunks/s), "
        f"{measured['queries']:,} held-out queries ({measured['queries_per_domain']} per domain), first stages' "
        f"{measured['candidates']} candidates each; float16-carried weights: largest change of a vector "
        f"{check['max |v_gpu - v_cpu| (index rows)']:.1e}, least cosine to the CPU's "
        f"{check['min cosine (index rows)']:.6f}"
        + (f"; {at} of the CPU's exact neighbours at {share(cpu['index size'])} ({cpu['queries']} queries): "
           f"{cpu[at]:.3f}." if cpu else ".")))
    show_table(pd.DataFrame(measured["rows"]).set_index(["fraction", "indexed chunks", "retriever"]), 3)
else:
    glue_text("full_recall", "not measured on this corpus, static embedder and settings")
    why = "missing" if measured is None else "from another corpus, static embedder or settings"
    display(Markdown(f"Not shown: {gpu_recall.name} is {why}; run `benchmarks/full_recall.py` on a GPU to measure it."))

# %% [markdown]
# ## What each retriever costs on the full index
# Build time (embedding or tokenising every chunk, and the index itself), memory of what is searched (re-ranking:
# its first stages; the candidates' vectors are read from its cache on disk), and the seconds per query
# (`latency_queries` held-out queries, one at a time; re-ranking with an empty cache, so it embeds each query's
# candidates with the reference embedder, as a first query does).

# %% tags=["hide-input"]
show_table(costs, 3)

# %% [markdown]
# ## A pretrained base model
# An instruction-tuned model gains from almost any raw text, which blurs what retrieval adds; the nearest-vs-random
# control on the full index is repeated on the packaged pretrained base model.

# %% tags=["hide-input"]
if base:
    show_table(pd.DataFrame({f"{base_model}: TTT-NN, k={base_k}": base_gain.as_row(),
                          f"{base_model}: nearest vs random same-domain": base_control.as_row()}).round(4))

# %% [markdown]
# ## The paper
# Hardt & Sun (ICLR 2024; other models, the full Pile, a Pile-tuned RoBERTa-large embedder)
# state in their abstract that "sufficient index quality and size are necessary". Their ablation restricts the
# index to 5 %, 10 %, ... 100 % of the Pile and plots the mean L2 distance to the r-th of 100 neighbours for
# 10,000 validation queries, the count of exact duplicates (distance below 1e-4) and LAMBADA queries as an
# out-of-distribution contrast; this chapter follows that design. The figure's values could not be retrieved
# for our notes, so no paper numbers are plotted here.

# %% [markdown]
# ## Reproduce this page
# {download}`Download the executed notebook <04_index_size.ipynb>` (every output of this page, with its code).

# %% tags=["remove-input"]
display(reproduce("04_index_size", params_file, run_keys, config.work_dir))

# %% [markdown]
# ## The configuration that produced these numbers

# %% tags=["hide-input"]
show_configuration(config)
