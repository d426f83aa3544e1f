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
# The mini-Pile that every other chapter uses: where each domain's text comes from, how much of it is
# indexed (train split) and held out (test split, split by source document so no test text is indexed),
# what the faiss index costs, and what retrieval returns for a few test documents.

# %% tags=["parameters"]
k = 10
model = "smollm2-135m"
embedder = "minilm"
corpus = "minipile"
domains = ""
docs_per_domain = 1
chunk_chars = 1200
domain_bytes = 250_000
seed = 0
work_dir = "artifacts"
examples = 3  # test documents shown with their neighbours

# %% tags=["hide-output"]
import pandas as pd
from IPython.display import display

from ttt_core.config import StudyConfig
from ttt_core.index import index_folder
from ttt_core.plots import plot_domain_sizes
from ttt_core.retrieve import retrieve
from ttt_core.study import prepare

config = StudyConfig.from_namespace(globals())
study = prepare(config)

# %% [markdown]
# ## Documents and bytes per domain

# %%
summary = study.corpus.summary()
display(summary)
plot_domain_sizes(summary);

# %% [markdown]
# ## Sources and licenses

# %%
sources = pd.DataFrame(study.corpus.manifest["sources"])
if not sources.empty:
    with pd.option_context("display.max_colwidth", None):
        display(sources[["domain", "pile analogue", "origin", "package", "version", "license", "what it is"]]
                .set_index("domain"))

# %% [markdown]
# ## The index

# %%
folder = index_folder(config, study.corpus)
on_disk = {p.name: p.stat().st_size for p in folder.iterdir()}
display(pd.DataFrame({
    "value": {"vectors": len(study.index), "dimensions": study.index.meta["dim"],
              "faiss metric": study.index.metric + " (exact, flat)", "embedder": config.embedder,
              "embedder tokens per document": config.embed_max_tokens,
              "embedding time (s)": study.index.meta["embed_seconds"],
              "faiss index on disk (MB)": round(on_disk["index.faiss"] / 1e6, 2),
              "index folder on disk (MB)": round(sum(on_disk.values()) / 1e6, 2)}}))

# %% [markdown]
# ## What retrieval returns
# A few test documents (first 300 characters) with their three nearest train documents; distances are
# squared L2 between embeddings (0 = identical text).

# %%
for doc in study.corpus.test_documents(1, config.seed, config.domains)[:examples]:
    print("=" * 100)
    print(f"QUERY  [{doc['domain']}] {doc['id']}\n{doc['text'][:300]!r}\n")
    for n in retrieve(doc["text"], 3, study.embedder, study.index, study.corpus, config.embed_max_tokens):
        print(f"  d={n.distance:.3f} [{n.domain}] {n.doc_id}\n  {n.text[:300]!r}\n")
