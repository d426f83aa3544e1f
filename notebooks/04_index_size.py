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
# StudyConfig fields, generated from ttt_core/config.py by `python -m ttt_core sync-parameters` (change them there)
# What is studied
model = "smollm2-135m"
# 'minilm-static' (ttt_core.static) is a model2vec table distilled from MiniLM: no transformer pass, a named
# deviation (DEVIATIONS: embedder)
embedder = "minilm"
corpus = "minipile"
domains = ()  # the test documents' domains (empty: all); the corpus and index hold every domain
docs_per_domain = 1  # test documents per domain (the book's: params/study.yml)
# Instead of docs_per_domain: this share of each domain's test documents, drawn as the official code drew them
# (random.Random(split_seed).shuffle, then the first 20 %: the paper's 42,916 Pile test documents)
test_portion = None
# Test-time training (paper: AdamW lr 2e-5, eps 1e-8, wd 0.01, clip 1.0, batch 1, fp32)
k = 10
eval_ks = (0, 1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 50)
learning_rate = 2e-05
adam_epsilon = 1e-08
weight_decay = 0.01
grad_clip = 1.0
max_length = 1024
reset_optimizer = True
# 'adamw' (the paper's) or 'adafactor' (factored second moments, no first moment: optimizer state of a few
# MB instead of twice the weights, so a 1.5B model trains in 24 GB; a named deviation)
optimizer = "adamw"
# Where the weights are restored from after each document: 'memory' (a copy) or 'file' (the packaged model's
# safetensors, checked against the weights first; no second copy in memory). The same numbers either way.
weights_snapshot = "memory"
seed = 0
# Corpus, embedding and scoring
chunk_bytes = 1000  # UTF-8 bytes per chunk: at most 1,002 tokens, one step at max_length 1024
# UTF-8 bytes read per domain before the split. None: 250,000 for the mini-Pile, every document of any other
# corpus; a number caps any corpus (what the cap dropped is kept in the manifest and warned about)
domain_bytes = None
test_fraction = 0.1  # share of content groups (else source documents) held out for testing
split_by = "group"  # 'group' (content group: a message or page in every language) or 'source' (file)
split_seed = 1216  # seeds the train/test split (1216: the official code's test subsample seed)
decontam_ngram = 50  # characters per n-gram of the overlap measure (works for unspaced scripts too)
decontam_threshold = 0.1  # leave out train chunks sharing more n-grams with the test split
neighbors = "nearest"  # 'nearest' (TTT-NN) or the controls 'random-domain', 'random-any'
# Which of the `selection_pool` nearest candidates (0: 4 k) are trained on, k steps in all: 'nearest' (the
# paper), 'sift' (greedy posterior-variance reduction, noise `sift_lambda`) or 'hullft' (a sparse convex
# reconstruction of the query, as a multiset; `reuse_gradients` reuses the gradient of a repeated text)
selection = "nearest"
selection_pool = 0
sift_lambda = 0.01
reuse_gradients = False
# The leaky index of the leakage chapter: every chunk of every *other* source, test chunks included, as a split
# by file allows (the translation of a test text in another language is in it); no decontamination.
leaky_index = False
# Embedder tokens per text: None is the embedder's declared limit (MiniLM 256, mpnet 384; the paper's RoBERTa
# 512, which the paper embeds); a number past the declared limit is a deviation (DEVIATIONS)
embed_max_tokens = None
embedder_tokenizer = None  # another tokenizer for the embedder (paper: roberta-base's)
index_fraction = 1.0  # index a nested random subset of the train split (index-size ablation)
# 'flat' (exact, the paper's) or an approximate faiss index for millions of vectors: 'ivf' (IVF-Flat, probing
# `index_nprobe` cells) or 'hnsw' (HNSW32, `index_ef_search`); its recall@k against exact search is measured
# on held-out queries when it is built and kept in the index's meta
index_type = "flat"
index_nprobe = 32
index_ef_search = 128
# How neighbours are found: one of RETRIEVERS ('dense': the `embedder`'s faiss index, the paper's kind).
# 'rerank': the union of the top `rerank_candidates` of each first stage in `rerank_from` ('bm25' and/or dense
# embedder names joined by '+'), re-ranked by exact `embedder` embeddings (ttt_core.retrievers)
retriever = "dense"
rerank_from = "bm25+minilm-static"
rerank_candidates = 100
eval_context = None
max_eval_tokens = None
split_query = False  # leakage control (paper's GPT-2 "split" run): query with the first part, score the rest
score_prefix = "lm-eval"  # first-window prefix: 'lm-eval' (BOS, else EOS), 'endoftext', or a vocabulary token
train_with_bos = True  # BOS before each training chunk where the model's tokenizer adds one (Gemma)
bootstrap_samples = 1000
# Where and how
device = "auto"
work_dir = "artifacts"
# End of the StudyConfig fields; this notebook's own parameters follow
fractions = "0.01,0.05,0.1,0.25,0.5,1.0"  # nested subsets of the train split
r_max = 50  # neighbours per query for the distance curves
max_queries = 200  # held-out test documents used as queries
gain_fractions = "0.05,0.25,1.0"  # index sizes at which TTT-NN is run (expensive)
gain_k = 5
gain_docs_per_domain = 1
compare_embedder = "mpnet"  # the stronger embedder ("" skips the quality axis)
compare_fraction = 0.25  # both embedders index this nested subset (mpnet embeds ~1 chunk/s on 2 CPU cores)
params_file = ""  # the parameter file this run was given (shown in "Reproduce this page")

# %% tags=["hide-input", "remove-output"]
# Before the cell binds any other name: a parameter this notebook does not declare is a typo, not a no-op.
from ttt_core.params import notebook_config

config = notebook_config(globals(), "04_index_size")

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from ttt_core.index import build_index, exact_duplicates, indexed_mask, load_embeddings, nested_subset
from ttt_core.plots import use_report_style
from ttt_core.report import NOT_RESOLVED, glue_finding, glue_text, interval_text, reproduce, show_finding
from ttt_core.study import compare, prepare, run_ttt, ttt_change

use_report_style()
study = prepare(config)
# The decontaminated index and its vectors (the full train split's embeddings, less the left-out chunks).
full, embeddings = study.index, load_embeddings(config, study.corpus)[indexed_mask(config, study.corpus)]
sizes = [float(f) for f in fractions.split(",")]
# The same number of held-out queries from every domain (as many as exist, up to max_queries in all).
queries_docs = study.corpus.test_documents(max(1, max_queries // len(study.corpus.domains)), config.seed)
queries = study.embedder.encode([d["text"] for d in queries_docs], config.embed_max_tokens, progress=True)
query_domains = np.array([d["domain"] for d in queries_docs])
row_domains = np.array(study.corpus.dataset.select_columns(["domain"]).select(full.rows.tolist())["domain"])


def reachable_r(keep: np.ndarray) -> int:
    """Neighbours per query that an index subset can return, also with any query's domain left out."""
    return max(1, min([r_max] + [int((keep & (row_domains != d)).sum()) for d in np.unique(query_domains)]))


# Distance to the r-th neighbour for in-domain and out-of-domain queries, per index size.
curves, duplicates = [], []
for fraction in sizes:
    keep = nested_subset(len(full), fraction, config.seed)
    index, r_here = full.subset(keep, embeddings), reachable_r(keep)
    for r, d in enumerate(index.distance_profile(queries, r_here), start=1):
        curves.append({"fraction": fraction, "r": r, "distance": d, "queries": "held-out, in-domain"})
    duplicates.append({"fraction": fraction, "indexed documents": len(index), "r up to": r_here,
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


def ttt_gain(sub_study) -> tuple[dict, list[dict]]:
    """TTT-NN at gain_k over one index, paired with k=0 on the same documents, and the per-document rows."""
    rows = run_ttt(sub_study)
    change = ttt_change(sub_study, rows)
    return {"bpb k=0": change.pile_before, f"bpb k={gain_k}": change.pile_after, "Pile-weighted gain %": -change.pile,
            "mean change %": change.percent, "low %": change.percent_low, "high %": change.percent_high,
            "change": change}, rows


# TTT-NN with gain_k neighbours from each index size (the full-size run reuses the TTT-NN chapter's rows).
gains, gain_rows, run_keys = [], {}, {}
for fraction in [float(f) for f in gain_fractions.split(",")]:
    sub = dataclasses.replace(config, k=gain_k, docs_per_domain=gain_docs_per_domain, index_fraction=fraction)
    sub_study = dataclasses.replace(study, config=sub, index=build_index(sub, study.corpus, study.embedder))
    gain, gain_rows[fraction] = ttt_gain(sub_study)
    gains.append({"embedder": config.embedder, "fraction": fraction, **gain})
    run_keys[f"{fraction:.0%} index"] = sub_study.run_key
gains = pd.DataFrame(gains)
small, large = gains["fraction"].min(), gains["fraction"].max()
size_effect = compare(study, gain_rows[small], gain_k, gain_rows[large], gain_k)

# Index quality: both embedders index the same nested subset and retrieve for the same documents.
quality, neighbour_lists, quality_rows = [], {}, {}
for name in [config.embedder, compare_embedder] if compare_embedder else []:
    sub = dataclasses.replace(config, embedder=name, k=gain_k, docs_per_domain=gain_docs_per_domain,
                              index_fraction=compare_fraction)
    sub_study = prepare(sub)  # embeds only the subset for an embedder without a full index
    gain, quality_rows[name] = ttt_gain(sub_study)
    neighbour_lists[name] = {r["doc_id"]: set(r["neighbors"]) for r in quality_rows[name]}
    meta = sub_study.index.meta
    quality.append({"embedder": name, "dimensions": meta["dim"], "indexed documents": len(sub_study.index),
                    "embedding seconds per document": meta["embed_seconds"] / meta["embedded_documents"], **gain})
    run_keys[f"{name} embedder, {compare_fraction:.0%} index"] = sub_study.run_key
if quality:
    quality = pd.DataFrame(quality).set_index("embedder")
    weak, strong = neighbour_lists.values()
    overlap = np.mean([len(weak[d] & strong[d]) / gain_k for d in weak])
    embedder_effect = compare(study, quality_rows[config.embedder], gain_k, quality_rows[compare_embedder], gain_k)

glue_finding("index_size", size_effect, note=f"{large:.0%} against {small:.0%} of the index, k = {gain_k}")
if len(quality):
    glue_finding("index_quality", embedder_effect,
                 note=f"{compare_embedder} against {config.embedder} neighbours from the same "
                      f"{compare_fraction:.0%} of the index, k = {gain_k}")
else:
    glue_text("index_quality", "not run (compare_embedder is empty)")
    glue_text("index_quality_verdict", NOT_RESOLVED)

# %% tags=["remove-cell"]
first, last = duplicates[0], duplicates[-1]
text = (f"Training on neighbours from the {large:.0%} index instead of the {small:.0%} index changes bits per byte "
        f"after TTT-NN by **{size_effect.describe()}**. With k = {gain_k}, TTT-NN changes bits per byte by "
        + "; ".join(f"{interval_text(c)} with the {f:.0%} index" for f, c in zip(gains["fraction"], gains["change"]))
        + " (mean per-document change). "
        f"Growing the index from {first['fraction']:.0%} to {last['fraction']:.0%} of the train split "
        f"({first['indexed documents']} to {last['indexed documents']} documents) brings the nearest neighbour of "
        f"a held-out query from a mean squared distance of {first['mean distance to 1st neighbour']:.3f} to "
        f"{last['mean distance to 1st neighbour']:.3f}; {last['exact duplicates (d < 1e-4)']} of {len(queries)} "
        f"queries have an exact duplicate in the full index.")
if len(quality):
    text += (f" Over the same {compare_fraction:.0%} subset, {compare_embedder} neighbours instead of "
             f"{config.embedder} neighbours change bits per byte after TTT-NN by **{embedder_effect.describe()}**; "
             f"the two embedders share {overlap:.0%} of their neighbours.")
show_finding(text)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(10, 4.5))
ax.errorbar(gains["fraction"], gains["mean change %"], marker="o", capsize=4, color="black",
            yerr=[gains["mean change %"] - gains["low %"], gains["high %"] - gains["mean change %"]])
for _, g in gains.iterrows():
    ax.annotate(f"{g['mean change %']:+.1f} %", (g["fraction"], g["mean change %"]), xytext=(8, 0),
                textcoords="offset points", va="center")
ax.axhline(0, color="grey", lw=0.8, ls="--")
ax.set_xscale("log")
ax.set_xticks(gains["fraction"], [f"{f:.0%}" for f in gains["fraction"]])
ax.minorticks_off()
ax.set_xlabel("share of the decontaminated train split indexed (log scale)")
ax.set_ylabel(f"bits per byte, change at k={gain_k} (%)")
ax.set_title(f"TTT-NN gain against index size\nmean per-document change with 95 % interval "
             f"({gains['change'].iloc[0].n_documents} documents)")
fig.tight_layout()

# %% [markdown]
# ## How this was run
# The paper claims that "sufficient index quality and size are necessary". We index nested random subsets
# of the train split (each a faiss index built by `ttt_core` from the cached embeddings) and measure, for a
# fixed set of held-out queries: the mean distance to the r-th neighbour, the number of exact duplicates,
# the same distances for out-of-domain queries (a domain left out of the index), and the TTT-NN gain at a
# fixed k (`gain_k`) on `gain_docs_per_domain` test documents per domain. A second axis of quality: the same
# subset of the train split indexed by the weaker and the stronger packaged embedder (MiniLM, 22M parameters,
# 384-d; mpnet, 110M parameters, 768-d).

# %% [markdown]
# ## TTT-NN gain against index size
# The figure's numbers, and the paired comparison of the largest against the smallest index: each document's
# bits per byte after TTT-NN with the larger index against its bits per byte after TTT-NN with the smaller one
# (negative: the larger index helps more).

# %% tags=["hide-input"]
display(gains.drop(columns="change").round(4))
display(pd.DataFrame([size_effect.as_row()], index=[f"{large:.0%} vs {small:.0%} index, k={gain_k}"]).round(4).T)

# %% [markdown]
# ## Distance to the r-th neighbour against index size
# Squared L2 distance between normalised embeddings (0 = same text, 2 = orthogonal); lower means closer
# neighbours. Out-of-domain: each query's own domain is removed from the index, as the paper's LAMBADA
# contrast (queries unlike anything indexed).

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
for ax, (name, group) in zip(axes, curves.groupby("queries")):
    sns.lineplot(data=group, x="r", y="distance", hue="fraction", palette="viridis", ax=ax)
    ax.set_title(f"queries: {name}")
    ax.set_xlabel("neighbour rank r")
    ax.set_ylabel("mean squared L2 distance to r-th neighbour")
    ax.legend(title="share of the index")
fig.tight_layout()
display(pd.DataFrame(duplicates).set_index("fraction").round(4))

# %% [markdown]
# ## Index quality: a weaker and a stronger embedder over the same subset
# Both embedders index the same nested subset of the train split (`compare_fraction`) and retrieve for the
# same test documents; TTT-NN then trains on each one's neighbours. Their distances live in different
# embedding spaces and are not comparable, so the comparison is the TTT-NN gain, the overlap of the two
# neighbour lists and the cost of embedding.

# %% tags=["hide-input"]
if len(quality):
    display(quality.drop(columns="change").round(4))
    display(pd.DataFrame([embedder_effect.as_row()],
                         index=[f"{compare_embedder} vs {config.embedder} neighbours, k={gain_k}"]).round(4).T)
    print(f"share of the {gain_k} neighbours both embedders retrieve: {overlap:.0%} "
          f"(mean over {len(weak)} test documents; index = {compare_fraction:.0%} of the train split)")

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
display(pd.DataFrame({"value": {k: str(v) for k, v in config.as_dict().items()}}))
