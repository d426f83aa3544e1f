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
# # TTT-NN: bits per byte before and after training on neighbours
#
# For each sampled test document of each mini-Pile domain we retrieve its `k` nearest neighbours from the
# faiss index of the decontaminated train split, take one AdamW step on each neighbour (nearest first; a
# neighbour is at most 1,000 bytes, so one step, and the rows record it), score the document at each k of the
# grid and restore the weights. Missing artifacts (packaged
# model conversion, corpus, index) are built here on the spot; finished documents are read back from the
# results file, so an interrupted run resumes.

# %% tags=["parameters"]
k = 10
model = "smollm2-135m"
embedder = "minilm"
corpus = "minipile"
domains = ""  # comma-separated subset of domains; empty means all
docs_per_domain = 1
max_length = 1024
learning_rate = 2e-5
seed = 0
chunk_bytes = 1000
domain_bytes = 250_000
reset_optimizer = True
score_prefix = "lm-eval"  # first scoring window: lm-eval 0.4 (BOS, else EOS), "endoftext", or a token
train_with_bos = True  # BOS before each training chunk where the tokenizer adds one (Gemma)
max_eval_tokens = None
bootstrap_samples = 1000
device = "auto"
work_dir = "artifacts"

# %% tags=["hide-output"]
import time

import pandas as pd
from IPython.display import Markdown, display

from ttt_core import paper
from ttt_core.config import StudyConfig
from ttt_core.metrics import pile_weights, relative_change
from ttt_core.models import PACKAGED
from ttt_core.plots import plot_bpb_vs_k
from ttt_core.study import prepare, run_ttt, summarize, ttt_change

config = StudyConfig.from_namespace(globals())
started = time.perf_counter()
study = prepare(config)
rows = run_ttt(study)
table, intervals = summarize(study, rows)
change = ttt_change(study, rows)  # paired on the same documents: k neighbours against none

# %%
print(f"model={config.model} embedder={config.embedder} k={config.k} documents={len(rows)} "
      f"run key={config.run_key(study.corpus.fingerprint)} wall time={time.perf_counter() - started:.0f} s")
steps = [s for row in rows for s in row["train_steps"]]
print(f"gradient steps per neighbour: {min(steps)} to {max(steps)} over {len(steps)} neighbours "
      f"({sum(s > 1 for s in steps)} neighbours took more than one step)")

# %% [markdown]
# ## Bits per byte per domain at each k
# Rows are mini-Pile domains (with the Pile task each stands in for) and the Pile-weighted aggregate;
# columns are the number of neighbours trained on. The last columns give the change from k = 0 to k.

# %%
summary = table.copy()
summary.columns = [f"k={c}" for c in summary.columns]
summary["change"] = table[config.k] - table[0]
summary["change %"] = relative_change(table[0], table[config.k])
summary.insert(0, "Pile task", [study.pile_set_names.get(d, "") for d in summary.index])
# Each domain's share of the Pile-weighted row: its task's Pile weight, split among the domains standing in for
# that task and renormalised over the tasks present (so a few tasks carry most of the weight).
weights = pile_weights(table.index.drop("Pile-weighted"), study.pile_set_names)
summary.insert(1, "weight %", (100 * weights).reindex(summary.index))
sources = pd.DataFrame(rows).groupby("domain").agg(documents=("doc_id", "size"), sources=("group", "nunique"))
summary = summary.join(sources)
display(summary.round(4))

# %%
plot_bpb_vs_k(table, intervals, title=f"{config.model}, {config.embedder} index, "
              f"{config.docs_per_domain} test documents per domain");

# %%
lower = int((summary.drop(index="Pile-weighted")["change"] < 0).sum())
gpt2 = dict(zip(paper.KS, paper.PILE_ALL_BY_K["GPT-2 117M"]))
what = PACKAGED[config.model].training if config.model in PACKAGED else "not a packaged model"
display(Markdown(
    f"Training {config.model} ({what}) on {config.k} neighbours changes bits per byte by **{change.describe()}**; "
    f"the domain aggregate is lower on {lower} of {len(summary) - 1} domains. The Pile-weighted figure "
    f"renormalises the Pile's weights over the {len(set(weights.index.map(study.pile_set_names)))} "
    f"Pile tasks present, so {weights.idxmax()} alone carries {weights.max():.0%} of it; the plain mean over "
    f"domains weighs every domain alike. The paper's GPT-2 117M (a "
    f"pretrained base model) on the Pile (paper's numbers): {gpt2[0]} before, "
    + (f"{gpt2[config.k]} at k = {config.k} ({relative_change(gpt2[0], gpt2[config.k]):+.1f} %), " if config.k in gpt2 and config.k != 50 else "")
    + f"{gpt2[50]} at k = 50 ({relative_change(gpt2[0], gpt2[50]):+.1f} %)."))

# %% [markdown]
# ## Intervals
# The finding above is paired: each document's bits per byte after training against its own before, the mean
# of those relative changes with a 10-90 % bootstrap interval (sources resampled across all domains, then
# documents within them, since chunks of one source are not independent). Below,
# the paper's unpaired intervals of each domain's level (documents resampled within each domain; with one
# document per domain they collapse to a point).

# %%
display(pd.DataFrame([change.as_row()], index=[f"k={config.k} vs k=0"]).round(4))

# %%
ends = intervals[intervals["k"].isin([0, config.k])].pivot(index="domain", columns="k", values=["low", "high"])
display(ends.round(4))

# %% [markdown]
# ## The configuration that produced these numbers

# %%
display(pd.DataFrame({"value": {k: str(v) for k, v in config.as_dict().items()}}))
