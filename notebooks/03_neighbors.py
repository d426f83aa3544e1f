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
# # How many neighbours?
#
# Bits per byte as a function of the number of neighbours trained on, per domain and Pile-weighted with
# bootstrap intervals; the training loss on each neighbour; the cost of each neighbour. Results of the
# TTT-NN chapter are reused when the configuration matches (also from a run with more neighbours: training
# is nearest first, so its first k steps are this run's), so this page usually computes nothing new.

# %% tags=["parameters"]
k = 10
model = "smollm2-135m"
embedder = "minilm"
corpus = "minipile"
domains = ""
docs_per_domain = 1
max_length = 512
learning_rate = 2e-5
seed = 0
chunk_chars = 1200
domain_bytes = 250_000
work_dir = "artifacts"

# %% tags=["hide-output"]
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from ttt_core import paper
from ttt_core.config import StudyConfig
from ttt_core.plots import plot_bpb_vs_k, plot_training
from ttt_core.results import training_frame
from ttt_core.metrics import relative_change
from ttt_core.study import prepare, run_ttt, summarize, ttt_change

config = StudyConfig.from_namespace(globals())
if config.k < 1:
    raise ValueError(f"invalid k={config.k}: this chapter plots bits per byte against k, so k must be >= 1")
study = prepare(config)
rows = run_ttt(study)
table, intervals = summarize(study, rows)
training = training_frame(rows)
changes = {k: ttt_change(study, rows, k) for k in table.columns if k > 0}  # paired with k=0, same documents

# %%
print(f"{len(rows)} documents, k={config.k}, run key {config.run_key(study.corpus.fingerprint)}")

# %% [markdown]
# ## Bits per byte against k

# %%
plot_bpb_vs_k(table, intervals, title=f"{config.model}: bits per byte against k");

# %% [markdown]
# Relative change from k = 0, per domain (negative is better), largest gains first:

# %%
relative = relative_change(table[0].to_numpy()[:, None], table).astype(float)
relative.columns = [f"k={c}" for c in relative.columns]
display(relative.sort_values(f"k={config.k}").round(2))

# %% [markdown]
# Paired change against k = 0 at each k: the mean over documents of each document's relative change, with its
# 10-90 % bootstrap interval (documents resampled across all domains), and the Pile-weighted change.

# %%
display(pd.DataFrame([c.as_row() for c in changes.values()], index=[f"k={k}" for k in changes]).round(3))

# %% [markdown]
# ## Training loss per neighbour and cost per neighbour

# %%
plot_training(training);

# %%
cost = training.groupby("domain")["seconds"].describe(percentiles=[0.5])[["mean", "50%", "max"]]
cost.columns = ["mean s/neighbour", "median s/neighbour", "max s/neighbour"]
display(cost.round(2))

# %% [markdown]
# ## The paper's result, for comparison (other models, the full Pile, k up to 50)
# Pile-weighted bits per byte from the authors' committed aggregates (Hardt & Sun, section 7 of our notes):
# GPT-2 117M falls from 1.208 to 0.992 with 50 neighbours, and its largest gains are on GitHub, EuroParl
# and DM Mathematics. These are not our numbers: the models, the index and the corpus differ.

# %%
fig, ax = plt.subplots(figsize=(8, 4.5))
sns.lineplot(data=paper.pile_all_frame(), x="k", y="bpb", hue="model", marker="o", ax=ax)
ax.set_xlabel("neighbours trained on, k")
ax.set_ylabel("Pile bits per byte (paper)")
ax.set_title("Hardt & Sun (2024): Pile-weighted bits per byte against k")
fig.tight_layout()
display(paper.gpt2_tasks_frame().round(4))

# %% [markdown]
# ## What this run shows

# %%
by_domain = relative.drop(index="Pile-weighted")[f"k={config.k}"].sort_values()
top = [f"{d} ({study.pile_set_names.get(d, '?')}, {v:+.1f} %)" for d, v in by_domain.head(3).items() if v < 0]
paper_gpt2 = dict(zip(paper.KS, paper.PILE_ALL_BY_K["GPT-2 117M"]))
paper_top = paper.gpt2_tasks_frame().sort_values("change %").head(3)
first = min(changes)
display(Markdown(
    f"On {len(rows)} test documents ({config.docs_per_domain} per domain), training {config.model} on "
    f"{config.k} neighbours changes bits per byte by {changes[config.k].describe()}. With {first} neighbour(s) "
    f"the change is {changes[first].percent:+.1f} % ({changes[first].percent_low:+.1f} to "
    f"{changes[first].percent_high:+.1f} %). By domain, bits per byte are lower at k = {config.k} than at "
    f"k = 0 on {int((by_domain < 0).sum())} of {len(by_domain)} domains; the largest relative gains are on "
    f"{', '.join(top) or 'none (no domain improved)'} (domain figures rest on {config.docs_per_domain} document(s) each). In the paper "
    f"(GPT-2 117M on the Pile, paper's numbers) Pile bits per byte fall from {paper_gpt2[0]} to "
    + (f"{paper_gpt2[config.k]} at k = {config.k} "
       f"({relative_change(paper_gpt2[0], paper_gpt2[config.k]):+.1f} %) and to " if config.k in paper_gpt2 and config.k != 50 else "")
    + f"{paper_gpt2[50]} at k = 50 ({relative_change(paper_gpt2[0], paper_gpt2[50]):+.1f} %), with the largest "
    f"gains on {', '.join(f'{t} ({v:+.1f} %)' for t, v in paper_top['change %'].items())} at k = 50."))
