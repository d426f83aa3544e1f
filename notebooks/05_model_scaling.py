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
# # Model scaling: does TTT-NN let a small model reach a larger one?
#
# The paper: GPT-2 (117M) after TTT-NN on 50 neighbours narrows much of the gap to GPT-Neo (1.3B, ten times
# larger) before it. Here the packaged ladder SmolLM2-135M, Gemma-3-270M, Qwen2.5-Coder-0.5B (and
# Qwen2.5-Coder-1.5B, scored without training on a CPU: its AdamW state does not fit in 24 GB) is run on the
# same test documents with the same index. Bits per byte divide by UTF-8 bytes, not tokens, so models with
# different tokenizers are comparable.

# %% tags=["parameters"]
k = 10
model = "smollm2-135m"
embedder = "minilm"
corpus = "minipile"
docs_per_domain = 1
chunk_chars = 1200
domain_bytes = 250_000
seed = 0
work_dir = "artifacts"
models = "smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b"  # smallest first; trained with TTT-NN
score_only_models = "qwen2.5-coder-1.5b"  # scored at k=0 only on a CPU (trained too where CUDA is present)
scaling_k = 5
scaling_docs_per_domain = 1

# %% tags=["hide-output"]
import dataclasses
import gc

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import display

from ttt_core.config import StudyConfig
from ttt_core.study import prepare, run_ttt, summarize

config = StudyConfig.from_namespace(globals())
study = prepare(config)
trained = [m for m in models.split(",") if m]
score_only = [m for m in score_only_models.split(",") if m]
if torch.cuda.is_available():
    trained, score_only = trained + score_only, []
tables = {}
for name in trained + score_only:
    run = dataclasses.replace(config, model=name, k=scaling_k if name in trained else 0,
                              docs_per_domain=scaling_docs_per_domain)
    model_study = dataclasses.replace(study, config=run, lm=None)
    tables[name], _ = summarize(model_study, run_ttt(model_study))
    del model_study
    gc.collect()

# %% [markdown]
# ## Bits per byte before and after TTT-NN, per model

# %%
rows = []
for name, table in tables.items():
    for domain in table.index:
        rows.append({"model": name, "domain": domain, "before": table.loc[domain, 0],
                     "after": table.loc[domain, table.columns.max()]})
results = pd.DataFrame(rows)
overall = results[results["domain"] == "Pile-weighted"].set_index("model")[["before", "after"]]
overall["k"] = [tables[m].columns.max() for m in overall.index]
display(overall.round(4))
display(results.pivot(index="domain", columns="model", values=["before", "after"]).round(4))

# %%
long = overall.reset_index().melt(id_vars=["model", "k"], value_vars=["before", "after"], var_name="TTT-NN",
                                  value_name="bpb")
fig, ax = plt.subplots(figsize=(8, 4.5))
sns.barplot(data=long, x="model", y="bpb", hue="TTT-NN", ax=ax)
ax.set_xlabel("")
ax.set_ylabel("Pile-weighted bits per byte")
ax.set_title(f"before (k=0) and after TTT-NN (k={scaling_k}); score-only models have no 'after'")
fig.tight_layout()

# %% [markdown]
# ## Does the smaller model after TTT-NN reach the larger one before it?

# %%
ladder = list(tables)
comparison = [{"smaller": small, "larger": large, "smaller after TTT-NN": overall.loc[small, "after"],
               "larger before": overall.loc[large, "before"],
               "reached": overall.loc[small, "after"] <= overall.loc[large, "before"]}
              for i, small in enumerate(ladder) for large in ladder[i + 1:] if small in trained]
display(pd.DataFrame(comparison).round(4))
