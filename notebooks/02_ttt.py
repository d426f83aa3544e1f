# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # TTT-NN: bits per byte before and after training on neighbours
#
# For each sampled test document of each mini-Pile domain we retrieve its `k` nearest neighbours from the
# faiss index of the train split, take one AdamW step per `max_length`-token chunk of each neighbour (nearest
# first), score the document at each k of the grid and restore the weights. Missing artifacts (packaged
# model conversion, corpus, index) are built here on the spot; finished documents are read back from the
# results file, so an interrupted run resumes.

# %% tags=["parameters"]
k = 10
model = "smollm2-135m"
embedder = "minilm"
corpus = "minipile"
domains = ""  # comma-separated subset of domains; empty means all
docs_per_domain = 1
max_length = 512
learning_rate = 2e-5
seed = 0
chunk_chars = 1200
domain_bytes = 250_000
reset_optimizer = True
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
from ttt_core.plots import plot_bpb_vs_k
from ttt_core.study import prepare, run_ttt, summarize

config = StudyConfig.from_namespace(globals())
started = time.perf_counter()
study = prepare(config)
rows = run_ttt(study)
table, intervals = summarize(study, rows)

# %%
print(f"model={config.model} embedder={config.embedder} k={config.k} documents={len(rows)} "
      f"run key={config.run_key(study.corpus.fingerprint)} wall time={time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## Bits per byte per domain at each k
# Rows are mini-Pile domains (with the Pile task each stands in for) and the Pile-weighted aggregate;
# columns are the number of neighbours trained on. The last columns give the change from k = 0 to k.

# %%
summary = table.copy()
summary.columns = [f"k={c}" for c in summary.columns]
summary["change"] = table[config.k] - table[0]
summary["change %"] = 100 * summary["change"] / table[0]
summary.insert(0, "Pile task", [study.pile_set_names.get(d, "") for d in summary.index])
display(summary.round(4))

# %%
plot_bpb_vs_k(table, intervals, title=f"{config.model}, {config.embedder} index, "
              f"{config.docs_per_domain} test documents per domain");

# %%
lower = int((summary.drop(index="Pile-weighted")["change"] < 0).sum())
gpt2 = paper.PILE_ALL_BY_K["GPT-2 117M"]
display(Markdown(
    f"Pile-weighted bits per byte: **{table.loc['Pile-weighted', 0]:.4f} before and "
    f"{table.loc['Pile-weighted', config.k]:.4f} after** training on {config.k} neighbours "
    f"({summary.loc['Pile-weighted', 'change %']:+.1f} %); lower on {lower} of {len(summary) - 1} domains. "
    f"The paper's GPT-2 117M on the Pile (paper's numbers): {gpt2[0]} before, {gpt2[-1]} after 50 neighbours "
    f"({100 * (gpt2[-1] / gpt2[0] - 1):+.1f} %)."))

# %% [markdown]
# ## Bootstrap intervals (10-90 %, documents resampled within each domain) at k = 0 and k

# %%
ends = intervals[intervals["k"].isin([0, config.k])].pivot(index="domain", columns="k", values=["low", "high"])
display(ends.round(4))

# %% [markdown]
# ## The configuration that produced these numbers

# %%
display(pd.DataFrame({"value": {k: str(v) for k, v in config.as_dict().items()}}))
