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
# # The corpus and the index
#
# ```{glue:md} finding
# :format: myst
# ```

# %% tags=["parameters", "remove-cell"]
# This chapter's own parameters. The shared ones (k, model, corpus, ...: ttt_core.config.StudyConfig, listed on
# the book's Parameters page) are passed the same way: papermill -p k 5
examples = 3  # test documents shown with their neighbours
short_ngram = 20  # a second, shorter n-gram for the split-by-file column: short repeated messages span < 50 characters
params_file = ""  # the parameter file this run was given (shown in "Reproduce this page")

# %% tags=["hide-input", "remove-output"]
# Before the cell binds any other name: a parameter this notebook does not declare is a typo, not a no-op.
from ttt_core.params import notebook_config

config = notebook_config(globals(), "01_corpus_and_index")

import dataclasses

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from ttt_core import decontaminate
from ttt_core.index import index_folder, indexed_mask
from ttt_core.plots import plot_domain_sizes, use_report_style
from ttt_core.report import reproduce, show_configuration, show_finding, show_table
from ttt_core.retrieve import retrieve
from ttt_core.corpus import build_record
from ttt_core.study import prepare

use_report_style()
study = prepare(config)
n = config.decontam_ngram
test_docs = study.test_documents()
leaky = dataclasses.replace(config, leaky_index=True)
leaky_study = prepare(leaky)  # shares the corpus and the train embeddings; embeds the test chunks once
texts = [d["text"] for d in test_docs]
overlap = pd.DataFrame({
    "domain": [d["domain"] for d in test_docs],
    "another source (split by file)": decontaminate.other_source_overlap(study.corpus, test_docs, n),
    f"another source, {short_ngram}-character n-grams": decontaminate.other_source_overlap(study.corpus, test_docs,
                                                                                         short_ngram),
    "train split (by content group)": decontaminate.train_split_overlap(study.corpus, texts, n),
    "decontaminated index": decontaminate.train_split_overlap(study.corpus, texts, n,
                                                              indexed_mask(config, study.corpus)),
    f"{config.k} neighbours, leaky index": [decontaminate.document_overlap(d["text"], [x.text for x in retrieve(
        d["text"], config.k, study.embedder, leaky_study.index, study.corpus, config.embed_max_tokens,
        leaky_study.own_source_rows(d))], n) for d in test_docs],
    f"{config.k} neighbours, decontaminated index": [decontaminate.document_overlap(d["text"], [x.text for x in retrieve(
        d["text"], config.k, study.embedder, study.index, study.corpus, config.embed_max_tokens)], n)
        for d in test_docs]})
by_domain_overlap = 100 * overlap.groupby("domain").mean()
train_domains = np.asarray(study.corpus.dataset["domain"])[study.corpus.rows("train")]
scores = decontaminate.train_overlap(study.corpus, n)
left_out = pd.DataFrame({"train chunks": pd.Series(train_domains).value_counts(),
                         "left out": pd.Series(train_domains[~indexed_mask(config, study.corpus)]).value_counts(),
                         "max n-gram share with the test split %": 100 * pd.Series(scores).groupby(train_domains).max()}
                        ).fillna(0).astype({"left out": int})

# %% tags=["remove-cell"]
worst = by_domain_overlap.iloc[:, 0].sort_values(ascending=False)
show_finding((
    f"Under a split by file, test documents of {', '.join(f'{d} ({v:.0f} %)' for d, v in worst.head(3).items())} "
    f"had that share of their {n}-character n-grams in another source that the index could hold ("
    + ", ".join(f"{d} {v:.0f} %" for d, v in by_domain_overlap.iloc[:, 1].sort_values(ascending=False).head(2).items())
    + f" with {short_ngram}-character n-grams). Split by content "
    f"group, the most any domain keeps in the train split is {by_domain_overlap.iloc[:, 2].max():.1f} %, and "
    f"{by_domain_overlap.iloc[:, 3].max():.1f} % in the decontaminated index; decontamination leaves out "
    f"{int(left_out['left out'].sum())} of {len(scores)} train chunks (threshold {config.decontam_threshold}). "
    f"Their retrieved neighbours hold on average {overlap.iloc[:, 5].mean():.1%} of a test document's n-grams from "
    f"the leaky index and {overlap.iloc[:, 6].mean():.1%} from the decontaminated one. The leakage chapter "
    f"measures what the leak does to the gain."))

# %% tags=["hide-input"]
plot_domain_sizes(study.corpus.summary());

# %% [markdown]
# ## How this was run
# The mini-Pile that every other chapter uses: where each domain's text comes from, how much of it is
# indexed (train split) and held out (test split, split by content group so that no test text, nor its
# translation, is indexed), how much of each test document the index still holds, what the faiss index costs,
# and what retrieval returns for a few test documents.

# %% [markdown]
# ## Leakage: how much of each test document the index holds
# For the sampled test documents, the share of their 50-character n-grams (whitespace collapsed, so unspaced
# scripts count too) found in: any chunk of another source (what a split by file, this study's first split, could
# let into the index: the same message or page in another language is another source; an upper bound, since such
# a split also holds about 10 % of the other sources out); the train split of the
# split by content group; the decontaminated index (train chunks sharing more than `decontam_threshold` of their
# n-grams with the test split are left out); the k neighbours retrieved from the leaky index (every other
# source's chunk) and from the decontaminated index. Means per domain, in percent. A message catalogue pairs short
# English messages with their translations, so few 50-character n-grams repeat across languages even where every
# English message does: the second column measures the split by file with `short_ngram`-character n-grams.

# %% tags=["hide-input"]
show_table(by_domain_overlap, 1)
show_table(left_out, 1)

# %% [markdown]
# ## Documents and bytes per domain

# %% tags=["hide-input"]
summary = study.corpus.summary()
show_table(summary)

# %% [markdown]
# ## Sources and licenses

# %% tags=["hide-input"]
sources = pd.DataFrame(study.corpus.manifest["sources"])
if not sources.empty:
    with pd.option_context("display.max_colwidth", None):
        show_table(sources[["domain", "pile analogue", "origin", "package", "version", "license", "what it is"]]
                   .set_index("domain"))

# %% [markdown]
# ## How much text, and what building it cost
# Per domain: the text read (every source whole, or up to its own cap, with the reason), its source documents and
# its chunks in each split. The build's time and peak memory are those of the run that built the corpus (a corpus
# read from its cache shows the first run's).

# %% tags=["hide-input"]
if not sources.empty:
    size = sources.set_index("domain")[["source documents", "bytes"]].assign(MB=lambda t: t["bytes"] / 1e6)
    for column in ("max_bytes", "max_bytes_why"):
        if column in sources:
            size[column] = sources.set_index("domain")[column]
    size = size.join(pd.DataFrame(study.corpus.manifest["documents per domain"]).T.add_suffix(" chunks"))
    show_table(size.drop(columns="bytes"), 2)
built = build_record(study.corpus)
show_table(pd.DataFrame({"value": {
    "chunks": len(study.corpus), "train chunks": len(study.corpus.rows("train")),
    "test chunks": len(study.corpus.rows("test")),
    "MB of text read": round(sources["bytes"].sum() / 1e6, 1) if not sources.empty else "not recorded",
    "corpus build (s)": built.get("seconds", "not recorded"),
    "corpus build peak memory (MB)": built.get("peak_rss_mb", "not recorded")}}))

# %% [markdown]
# ## Sources behind the test split
# A chunk is a document of the study, but chunks of one source (a file, a page in one language) are not
# independent evidence. Test documents are sampled from distinct sources first, and every interval resamples
# sources (content groups) before chunks. Domains with one test source rest on one text, however many chunks.

# %% tags=["hide-input"]
behind = study.corpus.sources_per_domain("test").join(study.corpus.sources_per_domain("train").add_suffix(" (train)"))
show_table(behind)

# %% [markdown]
# ## The index

# %% tags=["hide-input"]
folder = index_folder(config, study.corpus)
on_disk = {p.name: p.stat().st_size for p in folder.iterdir()}
show_table(pd.DataFrame({
    "value": {"vectors": len(study.index), "dimensions": study.index.meta["dim"],
              "faiss metric": study.index.metric + " (exact, flat)", "embedder": config.embedder,
              "embedder tokens per document": study.index.meta["embed_max_tokens"],
              "embedding time (s)": study.index.meta["embed_seconds"],
              "indexing throughput (chunks/s)": study.index.meta.get("chunks_per_second", "not recorded"),
              "index build peak memory (MB)": study.index.meta.get("peak_rss_mb", "not recorded"),
              "faiss index on disk (MB)": round(on_disk["index.faiss"] / 1e6, 2),
              "index folder on disk (MB)": round(sum(on_disk.values()) / 1e6, 2)}}))

# %% [markdown]
# ## What retrieval returns
# A few test documents (first 300 characters) with their three nearest train documents; distances are
# squared L2 between embeddings (0 = identical text).

# %% tags=["hide-input"]
for doc in study.corpus.test_documents(1, config.seed, config.domains)[:examples]:
    print("=" * 100)
    print(f"QUERY  [{doc['domain']}] {doc['id']}\n{doc['text'][:300]!r}\n")
    for n in retrieve(doc["text"], 3, study.embedder, study.index, study.corpus, config.embed_max_tokens):
        print(f"  d={n.distance:.3f} [{n.domain}] {n.doc_id}\n  {n.text[:300]!r}\n")

# %% [markdown]
# ## Reproduce this page
# {download}`Download the executed notebook <01_corpus_and_index.ipynb>` (every output of this page, with its code).

# %% tags=["remove-input"]
display(reproduce("01_corpus_and_index", params_file, {"index (TTT-NN run)": study.run_key},
                  config.work_dir))

# %% [markdown]
# ## The configuration that produced these numbers

# %% tags=["hide-input"]
show_configuration(config)
