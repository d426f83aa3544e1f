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
# ```{glue:md} finding
# :format: myst
# ```

# %% tags=["parameters", "remove-cell"]
# This chapter's own parameters. The shared ones (k, model, corpus, ...: ttt_core.config.StudyConfig, listed on
# the book's Parameters page) are passed the same way: papermill -p k 5
control_docs_per_domain = 1  # documents per domain of the random-neighbour controls (the first of the sample)
# Neighbours in the controls (None: k). The book's 5 shares the random same-domain arm with the index-size chapter.
control_k = None
params_file = ""  # the parameter file this run was given (shown in "Reproduce this page")

# %% tags=["hide-input", "remove-output"]
# Before the cell binds any other name: a parameter this notebook does not declare is a typo, not a no-op.
from ttt_core.params import notebook_config

config = notebook_config(globals(), "03_neighbors")

import dataclasses

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from ttt_core import paper
from ttt_core.plots import SERIES_GREYS, plot_change_vs_k, plot_training, use_report_style
from ttt_core.report import (glue_finding, glue_text, interval_text, reproduce, show_configuration, show_finding,
                             show_table)
from ttt_core.results import long_frame, training_frame
from ttt_core.metrics import bootstrap_mean, documents_at, domain_changes, relative_change, signed
from ttt_core.study import compare, prepare, run_ttt, summarize, ttt_change

use_report_style()
if config.k < 1:
    raise ValueError(f"invalid k={config.k}: this chapter plots bits per byte against k, so k must be >= 1")
if control_k is not None and not (isinstance(control_k, int) and 1 <= control_k <= config.k):
    raise ValueError(f"invalid control_k={control_k!r}: expected None (k) or an integer from 1 to k={config.k}")
study = prepare(config)
rows = run_ttt(study)
table, intervals = summarize(study, rows)
training = training_frame(rows)
changes = {k: ttt_change(study, rows, k) for k in table.columns if k > 0}  # paired with k=0, same documents
frame = long_frame(rows)
per_domain_k = pd.concat([domain_changes(documents_at(frame, 0), documents_at(frame, k), config.bootstrap_samples,
                                         config.seed)["change %"].rename(k) for k in changes], axis=1)
per_domain_k.insert(0, 0, 0.0)

# The controls: the same step budget on random chunks, on the first `control_docs_per_domain` documents per domain.
control_config = dataclasses.replace(config, docs_per_domain=min(control_docs_per_domain, config.docs_per_domain),
                                     k=control_k or config.k)
arms = {}
for rule in ("nearest", "random-domain", "random-any"):
    arm = dataclasses.replace(study, config=dataclasses.replace(control_config, neighbors=rule))
    arms[rule] = run_ttt(arm)  # 'nearest' is cut from the rows above
    study.lm = study.lm or arm.lm  # load the model once
arm_changes = {(rule, k): ttt_change(study, arm_rows, k) for rule, arm_rows in arms.items()
               for k in control_config.ks if k > 0}
ck = control_config.k
versus = {"nearest vs random same-domain": compare(study, arms["random-domain"], ck, arms["nearest"], ck),
          "random same-domain vs random any": compare(study, arms["random-any"], ck, arms["random-domain"],
                                                      ck),
          "random any vs no training": ttt_change(study, arms["random-any"], ck)}
near, dom, rand = (arm_changes[(rule, ck)] for rule in ("nearest", "random-domain", "random-any"))
retrieval = versus["nearest vs random same-domain"]
glue_finding("retrieval_vs_domain", retrieval, paper_claim=False,
             note=f"k = {ck}, nearest against random same-domain chunks")
# The landing page's abstract: how much of the nearest neighbours' gain training on the right domain gives alone.
glue_text("domain_vs_nearest", f"at k = {ck}, training on random chunks of a document's own domain changes bits "
          f"per byte by {signed(dom.percent)} %, on its nearest neighbours by {signed(near.percent)} %"
          + (f": {dom.percent / near.percent:.0%} of the gain comes without retrieval"
             if near.percent < 0 and dom.percent <= 0 else ""))

# %% tags=["remove-cell"]
paragraphs = []
by_domain = relative_change(table[0], table[config.k]).drop("Pile-weighted").sort_values()
top = [f"{d} ({study.pile_set_names.get(d, '?')}, {v:+.1f} %)" for d, v in by_domain.head(3).items() if v < 0]
paper_gpt2 = dict(zip(paper.KS, paper.PILE_ALL_BY_K["GPT-2 117M"]))
paper_top = paper.gpt2_tasks_frame().sort_values("change %").head(3)
first = min(changes)
paragraphs.append((
    f"On {len(rows)} test documents ({config.docs_per_domain} per domain), training {config.model} on "
    f"{config.k} neighbours changes bits per byte by {changes[config.k].describe()}. With {first} neighbour(s) "
    f"the change is {interval_text(changes[first])}. By domain, bits per byte are lower at k = {config.k} than at "
    f"k = 0 on {int((by_domain < 0).sum())} of {len(by_domain)} domains; the largest relative gains are on "
    f"{', '.join(top) or 'none (no domain improved)'} (domain figures rest on {config.docs_per_domain} document(s) each). In the paper "
    f"(GPT-2 117M on the Pile, paper's numbers) Pile bits per byte fall from {paper_gpt2[0]} to "
    + (f"{paper_gpt2[config.k]} at k = {config.k} "
       f"({relative_change(paper_gpt2[0], paper_gpt2[config.k]):+.1f} %) and to " if config.k in paper_gpt2 and config.k != 50 else "")
    + f"{paper_gpt2[50]} at k = 50 ({relative_change(paper_gpt2[0], paper_gpt2[50]):+.1f} %), with the largest "
    f"gains on {', '.join(f'{t} ({v:+.1f} %)' for t, v in paper_top['change %'].items())} at k = 50."))
share = (near.percent - dom.percent) / near.percent if near.percent < 0 else float("nan")
paragraphs.append((
    f"**Controls** ({len(arms['nearest'])} documents, {control_config.docs_per_domain} per domain, k = {ck}, "
    f"one gradient step per chunk in every arm): the nearest neighbours change bits per byte by "
    f"{interval_text(near)}, random chunks of the same domain by {interval_text(dom)} and random chunks of "
    f"any domain by {interval_text(rand)}. Nearest "
    f"against same-domain random on the same documents: {retrieval.describe()}. "
    + (f"So retrieval itself, beyond training on text of the right domain, accounts for {share:.0%} of the "
       f"nearest-neighbour gain in this run" if near.percent < 0 else "TTT-NN did not lower bits per byte here")
    + ("" if retrieval.resolved or near.percent >= 0 else
       ", but the paired comparison is not resolved, so this run cannot separate it from the domain effect")
    + ". The paper reports no such control."))

show_finding(*paragraphs)
# %% tags=["hide-input"]
overall = pd.DataFrame([{"k": 0, "change %": 0.0, "low %": 0.0, "high %": 0.0}] + [
    {"k": k, "change %": c.percent, "low %": c.percent_low, "high %": c.percent_high} for k, c in changes.items()])
plot_change_vs_k(per_domain_k.reset_index().melt(id_vars="domain", var_name="k", value_name="change %"), overall,
                 ylabel="bits per byte, change (%)",
                 title=f"{config.model}: mean per-document change against k, one panel per domain");

# %% [markdown]
# ## How this was run
# Bits per byte as a function of the number of neighbours trained on, per domain and over all documents with
# bootstrap intervals; the training loss on each neighbour; the cost of each neighbour. Results of the
# TTT-NN chapter are reused when the configuration matches (also from a run with more neighbours: training
# is nearest first, so its first k steps are this run's). Then the controls the paper lacks: the same number of
# steps on random train chunks of the test document's own domain, and on random chunks of the whole index, on the
# same documents, to separate "nearest" from "same domain" from "more training".

# %% [markdown]
# ## Nearest neighbours against random chunks
# Each curve is the mean over the same documents of each document's relative change from k = 0, with its 95 %
# bootstrap band: the nearest neighbours (TTT-NN), k random train chunks of the document's own domain, k random
# chunks of the whole index. Every neighbour is one gradient step in all three, so the step budget is equal.

# %% tags=["hide-input"]
curves = pd.DataFrame([{"neighbours": rule, "k": k, "change %": c.percent, "low": c.percent_low,
                        "high": c.percent_high} for (rule, k), c in arm_changes.items()])
labels = {"nearest": "nearest neighbours (TTT-NN)", "random-domain": "random chunks, same domain",
          "random-any": "random chunks, any domain"}
fig, ax = plt.subplots(figsize=(10, 5))
for (rule, curve), color, style in zip(curves.groupby("neighbours", sort=False), SERIES_GREYS, ("-", "--", ":")):
    ax.plot(curve["k"], curve["change %"], marker="o", color=color, ls=style)
    ax.fill_between(curve["k"], curve["low"], curve["high"], alpha=0.15, color=color)
    ax.annotate(labels[rule], (curve["k"].iloc[-1], curve["change %"].iloc[-1]), xytext=(6, 0),
                textcoords="offset points", va="center", color=color)
ax.axhline(0, color="grey", lw=0.8)
ax.set_xlim(right=curves["k"].max() * 1.45)
ax.set_xlabel("chunks trained on, k (one gradient step each)")
ax.set_ylabel("bits per byte, mean change per document (%)")
ax.set_title(f"{config.model}: nearest neighbours vs random chunks ({len(arms['nearest'])} documents, 95 % bands)")
fig.tight_layout()

# %% [markdown]
# Each domain's mean change in each arm and the paired difference nearest minus same-domain random, with its
# interval over that domain's documents (with one document per domain, as by default, no interval; a spread of
# a few documents is not a finding either); then the paired
# comparisons over all documents.

# %% tags=["hide-input"]
arm_frames = {rule: documents_at(long_frame(arm_rows), ck) for rule, arm_rows in arms.items()}
before = documents_at(long_frame(arms["nearest"]), 0)
per_document_arms = pd.DataFrame({rule: relative_change(before["bpb"], frame.loc[before.index, "bpb"])
                                  for rule, frame in arm_frames.items()})
per_document_arms["nearest - random-domain"] = per_document_arms["nearest"] - per_document_arms["random-domain"]
per_domain_arms = per_document_arms.groupby(before["domain"]).mean()
per_domain_arms.columns = ["nearest %", "random same-domain %", "random any %", "nearest - same-domain (points)"]
# Each domain's paired interval of nearest against same-domain random (its documents resampled; with one or two
# documents per domain it is their spread, not evidence).
intervals_by_domain = {d: bootstrap_mean(v, config.bootstrap_samples, config.seed, groups=before.loc[v.index, "group"])[1:]
                       for d, v in per_document_arms["nearest - random-domain"].groupby(before["domain"])}
per_domain_arms["low"] = [intervals_by_domain[d][0] for d in per_domain_arms.index]
per_domain_arms["high"] = [intervals_by_domain[d][1] for d in per_domain_arms.index]
per_domain_arms["docs"] = before.groupby("domain").size()
show_table(per_domain_arms, 2)
show_table(pd.DataFrame([c.as_row() for c in versus.values()], index=list(versus)).T, 3)

# %% [markdown]
# ## Per domain at each k
# Relative change from k = 0 of each domain's bits per byte (negative is better), largest gains first; then the
# paired change over all documents at each k.

# %% tags=["hide-input"]
relative = relative_change(table[0].to_numpy()[:, None], table).astype(float)
relative.columns = [f"k={c}" for c in relative.columns]
show_table(relative.sort_values(f"k={config.k}"), 2)
show_table(pd.DataFrame([c.as_row() for c in changes.values()], index=[f"k={k}" for k in changes]).T, 3)

# %% [markdown]
# ## Training loss per neighbour and cost per neighbour

# %% tags=["hide-input"]
plot_training(training);

# %% tags=["hide-input"]
cost = training.groupby("domain")["seconds"].describe(percentiles=[0.5])[["mean", "50%", "max"]]
cost.columns = ["mean s/neighbour", "median s/neighbour", "max s/neighbour"]
show_table(cost, 2)

# %% [markdown]
# ## The paper's result, for comparison (other models, the full Pile, k up to 50)
# Pile-weighted bits per byte from the authors' committed aggregates (Hardt & Sun, section 7 of our notes):
# GPT-2 117M falls from 1.208 to 0.992 with 50 neighbours, and its largest gains are on GitHub, EuroParl
# and DM Mathematics. These are not our numbers: the models, the index and the corpus differ.

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(10, 4.5))
paper_frame = paper.pile_all_frame()
greys = ["0.05", "0.3", "0.5", "0.7"]  # the paper's models, not domains: greys with direct labels
sns.lineplot(data=paper_frame, x="k", y="bpb", hue="model", marker="o", ax=ax, legend=False, palette=greys)
for (name, curve), color in zip(paper_frame.groupby("model", sort=False), greys):
    ax.annotate(name, (curve["k"].iloc[-1], curve["bpb"].iloc[-1]), xytext=(6, 0), textcoords="offset points",
                va="center", color=color)
ax.set_xlim(right=75)
ax.set_xlabel("neighbours trained on, k")
ax.set_ylabel("Pile bits per byte (paper)")
ax.set_title("Hardt & Sun (2024): Pile-weighted bits per byte against k (paper's numbers)")
fig.tight_layout()
show_table(paper.gpt2_tasks_frame(), 4)

# %% [markdown]
# ## Reproduce this page
# {download}`Download the executed notebook <03_neighbors.ipynb>` (every output of this page, with its code).

# %% tags=["remove-input"]
display(reproduce("03_neighbors", params_file,
                  {"TTT-NN": study.run_key,
                   **{f"control: {rule}": dataclasses.replace(
                       study, config=dataclasses.replace(control_config, neighbors=rule)).run_key for rule in arms}},
                  config.work_dir))

# %% [markdown]
# ## The configuration that produced these numbers

# %% tags=["hide-input"]
show_configuration(config)
