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
# ```{glue:md} finding
# :format: myst
# ```

# %% tags=["parameters", "remove-cell"]
# This chapter's own parameters. The shared ones (k, model, corpus, ...: ttt_core.config.StudyConfig, listed on
# the book's Parameters page) are passed the same way: papermill -p k 5
params_file = ""  # the parameter file this run was given (shown in "Reproduce this page")

# %% tags=["hide-input", "remove-output"]
# Before the cell binds any other name: a parameter this notebook does not declare is a typo, not a no-op.
from ttt_core.params import notebook_config

config = notebook_config(globals(), "02_ttt")

import pandas as pd
from IPython.display import Markdown, display

from ttt_core import paper
from ttt_core.metrics import documents_at, domain_changes, pile_weights, relative_change, signed
from ttt_core.models import PACKAGED
from ttt_core.plots import plot_change_by_domain, use_report_style
from ttt_core.report import (glue_finding, glue_not_resolved, glue_text, reproduce, show_configuration, show_finding,
                             show_table)
from ttt_core.results import long_frame
from ttt_core.study import compare, prepare, run_ttt, summarize, ttt_change

use_report_style()
study = prepare(config)
rows = run_ttt(study)
table, intervals = summarize(study, rows)
change = ttt_change(study, rows)  # paired on the same documents: k neighbours against none
frame = long_frame(rows)
by_domain = domain_changes(documents_at(frame, 0), documents_at(frame, config.k), config.bootstrap_samples,
                           config.seed) if config.k > 0 else None
first_k = min((kk for kk in config.ks if kk > 0), default=0)
more = compare(study, rows, first_k, rows, config.k) if 0 < first_k < config.k else None  # k against fewer

gpt2 = dict(zip(paper.KS, paper.PILE_ALL_BY_K["GPT-2 117M"]))
what = PACKAGED[config.model].training if config.model in PACKAGED else "not a packaged model"
weights = pile_weights(table.index.drop("Pile-weighted"), study.pile_set_names)
lower = int((table[config.k] < table[0]).drop("Pile-weighted").sum())
glue_finding("ttt_change", change, note=f"k = {config.k}",
             paper_percent=paper.relative_change("GPT-2 117M", config.k), paper_note=f"GPT-2 117M, k = {config.k}")
glue_text("ttt_domains_lower", f"lower on {lower} of {len(table) - 1} domains")
# The landing page's abstract: our mean change beside the paper's GPT-2 at the same k, in words.
paper_at_k = paper.relative_change("GPT-2 117M", config.k)
glue_text("ttt_vs_paper", "the paper reports no k = {config.k}" if paper_at_k is None else
          f"{'less' if abs(change.percent) < abs(paper_at_k) else 'more'} than the paper's GPT-2 117M at the same "
          f"k ({signed(paper_at_k)} %)")
# The quantities the paper-scale page sets beside the paper's (book/paper_scale.md).
seconds = [s for row in rows for s in row["train_seconds"]]
best = relative_change(table[0], table[config.k]).drop("Pile-weighted").idxmin()
glue_text("scale_documents", f"{len(rows)} documents of {len(table) - 1} mini-Pile domains "
          f"({config.docs_per_domain} per domain)")
glue_text("scale_index", f"{len(study.index):,} train chunks of at most {config.chunk_bytes:,} bytes, "
          f"{config.embedder}, {config.index_type} index" if config.chunk_bytes else
          f"{len(study.index):,} whole train documents, {config.embedder}, {config.index_type} index")
glue_text("scale_k", f"{config.k}")
glue_text("scale_bpb", f"{table.loc['Pile-weighted', 0]:.4f} → {table.loc['Pile-weighted', config.k]:.4f} at "
          f"k = {config.k} ({relative_change(table.loc['Pile-weighted', 0], table.loc['Pile-weighted', config.k]):+.1f} %), "
          f"{config.model}")
glue_text("scale_seconds", f"{sum(seconds) / max(1, len(seconds)):.2f} s per neighbour, the training step alone "
          f"({study.language_model().device.type}; scoring runs only at the {len(config.ks)} k of the grid)")
glue_text("scale_best_domain", f"{best} ({study.pile_set_names.get(best, best)}): {table.loc[best, 0]:.4f} → "
          f"{table.loc[best, config.k]:.4f} ({relative_change(table.loc[best, 0], table.loc[best, config.k]):+.1f} %)")
if more is not None:
    glue_finding("ttt_more", more, note=f"k = {config.k} against k = {first_k}",
                 paper_percent=paper.relative_change("GPT-2 117M", config.k, first_k),
                 paper_note=f"GPT-2 117M, k = {config.k} against k = {first_k}")
else:
    glue_not_resolved("ttt_more", f"not run (k = {config.k} has no smaller k > 0 in the grid)")

# %% tags=["remove-cell"]
show_finding((
    f"Training {config.model} ({what}) on {config.k} neighbours changes bits per byte by **{change.describe()}**; "
    f"the domain aggregate is lower on {lower} of {len(table) - 1} domains. "
    + (f"More neighbours help: {config.k} neighbours against {first_k}, on the same documents, change bits per "
       f"byte by {more.describe()}. " if more is not None else "")
    + f"The Pile-weighted figure "
    f"renormalises the Pile's weights over the {len(set(weights.index.map(study.pile_set_names)))} "
    f"Pile tasks present, so {weights.idxmax()} alone carries {weights.max():.0%} of it; the plain mean over "
    f"domains weighs every domain alike. The paper's GPT-2 117M (a "
    f"pretrained base model) on the Pile (paper's numbers): {gpt2[0]} before, "
    + (f"{gpt2[config.k]} at k = {config.k} ({relative_change(gpt2[0], gpt2[config.k]):+.1f} %), " if config.k in gpt2 and config.k != 50 else "")
    + f"{gpt2[50]} at k = 50 ({relative_change(gpt2[0], gpt2[50]):+.1f} %)."))

# %% tags=["hide-input"]
if by_domain is not None:
    plot_change_by_domain(by_domain, ("all documents", change.percent, change.percent_low, change.percent_high),
                          xlabel=f"change in bits per byte after k = {config.k} neighbours (%)",
                          title=f"{config.model}, {config.embedder} index: TTT-NN per domain");

# %% [markdown]
# ## How this was run
# For each sampled test document of each mini-Pile domain we retrieve its `k` nearest neighbours from the
# faiss index of the decontaminated train split, take one AdamW step on each neighbour (nearest first; a
# neighbour is at most 1,000 bytes, so one step, and the rows record it), score the document at each k of the
# grid and restore the weights. The figure shows each domain's mean per-document change with its 95 %
# bootstrap interval (its sources resampled, then its documents; with one or two sources per domain this is
# their spread, not evidence) and, in black, the mean over all documents, the chapter's finding.

# %% tags=["hide-input"]
steps = [s for row in rows for s in row["train_steps"]]
print(f"gradient steps per neighbour: {min(steps, default=0)} to {max(steps, default=0)} over {len(steps)} "
      f"neighbours ({sum(s > 1 for s in steps)} neighbours took more than one step); {len(rows)} documents")

# %% [markdown]
# ## Bits per byte per domain
# One row per mini-Pile domain (with the Pile task it stands in for and its share of the Pile-weighted
# aggregate) and the aggregate: bits per byte before training and after k neighbours and their relative change
# ("bpb change %", of the domain's bits per byte over its bytes), then the mean of each document's change with its
# interval ("doc.", as in the figure). The full k grid is in the next chapter.

# %% tags=["hide-input"]
summary = pd.DataFrame({"Pile task": [study.pile_set_names.get(d, "") for d in table.index]}, index=table.index)
# Each domain's share of the Pile-weighted row: its task's Pile weight, split among the domains standing in for
# that task and renormalised over the tasks present (so a few tasks carry most of the weight).
summary["weight %"] = (100 * weights).reindex(summary.index)
summary["bpb k=0"] = table[0]
summary[f"bpb k={config.k}"] = table[config.k]
summary["bpb change %"] = relative_change(table[0], table[config.k])  # of the domain's (or aggregate's) bpb
if by_domain is not None:  # the mean of each document's change, with its interval (as in the figure)
    summary = summary.join(by_domain[["change %", "low %", "high %", "documents", "sources"]].rename(
        columns={"change %": "doc. change %", "low %": "doc. low %", "high %": "doc. high %", "documents": "docs"}))
    summary[["docs", "sources"]] = summary[["docs", "sources"]].astype("Int64")  # blank on the aggregate row
show_table(summary, 3)

# %% [markdown]
# ## Intervals
# The finding above is paired: each document's bits per byte after training against its own before, the mean
# of those relative changes with a 95 % bootstrap interval and the paper's 10-90 % beside it (sources resampled
# across all domains, then documents within them, since chunks of one source are not independent). Below, the
# paired comparison in full and the paper's unpaired intervals of each domain's level (documents resampled within
# each domain; a domain of one document has none, shown as empty).

# %% tags=["hide-input"]
show_table(pd.DataFrame([change.as_row()], index=[f"k={config.k} vs k=0"]).T, 4)

# %% tags=["hide-input"]
ends = intervals[intervals["k"].isin([0, config.k])].pivot(index="domain", columns="k", values=["low", "high"])
show_table(ends, 4)

# %% [markdown]
# ## Reproduce this page
# {download}`Download the executed notebook <02_ttt.ipynb>` (every output of this page, with its code).

# %% tags=["remove-input"]
display(reproduce("02_ttt", params_file, {"TTT-NN": study.run_key}, config.work_dir))

# %% [markdown]
# ## The configuration that produced these numbers

# %% tags=["hide-input"]
show_configuration(config)
