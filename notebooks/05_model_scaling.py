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
# # Model scaling: does TTT-NN let a small model reach a larger one?
#
# ```{glue:md} finding
# :format: myst
# ```

# %% tags=["parameters", "remove-cell"]
# This chapter's own parameters. The shared ones (k, model, corpus, ...: ttt_core.config.StudyConfig, listed on
# the book's Parameters page) are passed the same way: papermill -p k 5
models = "smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b"  # smallest first; trained with TTT-NN
score_only_models = "qwen2.5-coder-1.5b"  # scored without training only on a CPU (trained too where CUDA is present)
scaling_k = 5
scaling_docs_per_domain = 1
bos_ablation_models = ""  # also train these without BOS on training chunks (method version 1), e.g. "gemma3-270m"
adafactor_models = ""  # train these with the Adafactor optimizer (a named deviation: AdamW's state does not fit)
params_file = ""  # the parameter file this run was given (shown in "Reproduce this page")

# %% tags=["hide-input", "remove-output"]
# Before the cell binds any other name: a parameter this notebook does not declare is a typo, not a no-op.
from ttt_core.params import notebook_config

config = notebook_config(globals(), "05_model_scaling")

import dataclasses
import gc

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from ttt_core import paper
from ttt_core.metrics import relative_change
from ttt_core.models import PACKAGED
from ttt_core.plots import SERIES_GREYS, use_report_style
from ttt_core.report import (glue_finding, glue_not_resolved, glue_text, interval_text, reproduce, show_configuration,
                             show_finding, show_table)
from ttt_core.study import compare, prepare, run_ttt, summarize, ttt_change

use_report_style()
study = prepare(config)
trained = [m for m in models.split(",") if m]
score_only = [m for m in score_only_models.split(",") if m]
if torch.cuda.is_available():
    trained, score_only = trained + score_only, []
tables, model_rows, changes, parameter_counts, no_bos, run_keys = {}, {}, {}, {}, {}, {}
for name in trained + score_only:
    run = dataclasses.replace(config, model=name, k=scaling_k if name in trained else 0,
                              docs_per_domain=scaling_docs_per_domain,
                              optimizer="adafactor" if name in adafactor_models.split(",") else config.optimizer,
                              # and restored from its own file: no second copy of its weights in memory
                              weights_snapshot="file" if name in adafactor_models.split(",") else config.weights_snapshot)
    model_study = dataclasses.replace(study, config=run, lm=None)
    model_rows[name] = run_ttt(model_study)
    run_keys[name] = model_study.run_key
    tables[name], _ = summarize(model_study, model_rows[name])
    if name in trained:
        changes[name] = ttt_change(model_study, model_rows[name])
    if name in trained and name in bos_ablation_models.split(","):  # the same run with training chunks as method version 1 made them
        ablation = dataclasses.replace(model_study, config=dataclasses.replace(run, train_with_bos=False))
        no_bos[name] = (run_ttt(ablation), model_study.language_model().bos_token_id is not None)
    parameter_counts[name] = sum(p.numel() for p in model_study.language_model().model.parameters())
    del model_study
    gc.collect()


def gap_closed(small_before: float, small_after: float, large_before: float) -> float:
    """Share of the before-TTT gap to the larger model that TTT-NN removes; undefined (NaN) when the larger
    model was not better to begin with."""
    gap = small_before - large_before
    return 100 * (small_before - small_after) / gap if gap > 0 else float("nan")


rows = []
for name, table in tables.items():
    trained_k = table.columns.max()
    for domain in table.index:
        rows.append({"model": name, "domain": domain, "before": table.loc[domain, 0],
                     "after": table.loc[domain, trained_k] if trained_k > 0 else float("nan")})
results = pd.DataFrame(rows)
overall = results[results["domain"] == "Pile-weighted"].set_index("model")[["before", "after"]]
overall["change %"] = relative_change(overall["before"], overall["after"])
overall["doc. change %"] = [changes[m].percent if m in changes else float("nan") for m in overall.index]
overall["low %"] = [changes[m].percent_low if m in changes else float("nan") for m in overall.index]
overall["high %"] = [changes[m].percent_high if m in changes else float("nan") for m in overall.index]
overall["k"] = [tables[m].columns.max() for m in overall.index]
overall["params (M)"] = [round(parameter_counts[m] / 1e6, 1) for m in overall.index]
overall["training"] = [PACKAGED[m].training if m in PACKAGED else "test model" for m in overall.index]
overall["optimizer"] = ["adafactor" if m in adafactor_models.split(",") else config.optimizer for m in overall.index]

ladder = list(tables)
pairs = [(small, large) for i, small in enumerate(ladder) for large in ladder[i + 1:] if small in trained]
# Paired on the same documents: the smaller model after TTT-NN (B) against the larger model before it (A).
reach = {(small, large): compare(study, model_rows[large], 0, model_rows[small], scaling_k) for small, large in pairs}
comparison = pd.DataFrame([
    {"smaller": small, "larger": large, "smaller after": overall.loc[small, "after"],
     "larger before": overall.loc[large, "before"], "smaller before": overall.loc[small, "before"],
     "gap closed %": gap_closed(overall.loc[small, "before"], overall.loc[small, "after"], overall.loc[large, "before"]),
     "reached": overall.loc[small, "after"] <= overall.loc[large, "before"],
     "doc. change %": reach[small, large].percent,
     "low %": reach[small, large].percent_low, "high %": reach[small, large].percent_high}
    for small, large in pairs])
bos_effects = {}
for name, (rows_without, adds_bos) in no_bos.items():
    without = ttt_change(study, rows_without, scaling_k)
    bos_effects[name] = (without, compare(study, rows_without, scaling_k, model_rows[name], scaling_k), adds_bos)

# The landing page: the smallest model after TTT-NN against the next larger one before it, and a pretrained
# base model's own TTT-NN change (the paper's models are base models; the default SmolLM2 is instruction-tuned).
# The paper's claim holds from some k on (its GPT-2 117M after TTT-NN first goes below GPT-2 Large before it at
# k = 10); below that k the paper's own model does not reach either, so our run at a smaller k cannot test it.
paper_k = {m: dict(zip(paper.KS, v)) for m, v in paper.PILE_ALL_BY_K.items()}
gpt2, gpt2_large = paper_k["GPT-2 117M"], paper_k["GPT-2 Large 774M"]
paper_reach_k = min((kk for kk in paper.KS if kk > 0 and gpt2[kk] <= gpt2_large[0]), default=None)
if pairs:
    small, large = pairs[0]
    if paper_reach_k is not None and scaling_k < paper_reach_k:
        at_k = f" ({gpt2[scaling_k]})" if scaling_k in gpt2 else ""
        glue_not_resolved("scaling_reach", f"{interval_text(reach[small, large])}, {small} after TTT-NN against "
                          f"{large} before it; at k = {scaling_k} the paper's GPT-2 117M{at_k} does not reach GPT-2 "
                          f"Large ({gpt2_large[0]}) either, only from k = {paper_reach_k}", reach[small, large])
    else:
        glue_finding("scaling_reach", reach[small, large], note=f"{small} after TTT-NN against {large} before it")
else:
    glue_not_resolved("scaling_reach", "not run (no smaller model trained)")
base = [m for m in changes if m in PACKAGED and PACKAGED[m].training == "pretrained base"]
if base:
    glue_finding("scaling_base", changes[base[0]], note=f"{base[0]}, k = {scaling_k}",
                 paper_percent=paper.relative_change("GPT-2 117M", scaling_k), paper_note=f"GPT-2 117M, k = {scaling_k}")
else:
    glue_not_resolved("scaling_base", "not run (no pretrained base model in `models`)")


# %% tags=["remove-cell"]
def reach_sentence(small: str, large: str) -> str:
    c = comparison[(comparison["smaller"] == small) & (comparison["larger"] == large)].iloc[0]
    verdict = "reaches" if c["reached"] else "does not reach"
    gap = "the larger was not better before" if pd.isna(c["gap closed %"]) else f"gap closed {c['gap closed %']:.0f} %"
    return (f"**{small} after TTT-NN {verdict} {large} before it** in the Pile-weighted aggregate "
            f"({c['smaller after']:.4f} vs {c['larger before']:.4f}; {gap}); per document, {small} after against "
            f"{large} before: {reach[small, large].describe()}.")


lines = [f"On {scaling_docs_per_domain} test document(s) in each of {len(study.corpus.domains)} mini-Pile domains, "
         f"with k = {scaling_k} neighbours from the {config.embedder} index, "
         + (reach_sentence(*pairs[0]) if pairs else "no smaller model was trained.") + " TTT-NN per model:"]
for name in ladder:
    row = overall.loc[name]
    after = (f"TTT-NN {changes[name].describe()}" if name in changes else "not trained here")
    lines.append(f"- {name} ({row['params (M)']:.0f} M parameters, {row['training']}): {row['before']:.4f} "
                 f"bits per byte before; {after}.")
for name, (without, effect, adds_bos) in bos_effects.items():
    lines.append(f"- {name} without BOS on its training chunks (method version 1): {without.describe()}; with BOS, "
                 f"bits per byte after TTT-NN differ from that run by {effect.describe()}.")
lines.append(f"\nThe paper (other models, the Pile, k = 50): GPT-2 117M goes from {gpt2[0]} to "
             f"{gpt2[50]}, below GPT-2 Large before TTT ({gpt2_large[0]}) but not "
             f"GPT-Neo 1.3B ({paper_k['GPT-Neo 1.3B'][0]}); it first goes below GPT-2 Large at k = {paper_reach_k}"
             + (f", and at k = {scaling_k}, this chapter's k, it is at {gpt2[scaling_k]}" if scaling_k in gpt2 else "")
             + f". The paper's models are pretrained base models; our ladder "
             f"mixes families, training data and tuning (the 'training' column), so model size is not the only "
             f"difference between its rungs. Every pair of the ladder is below the figure.")
show_finding("\n".join(lines))

# %% tags=["hide-input"]
long = overall.reset_index().melt(id_vars=["model", "k"], value_vars=["before", "after"], var_name="TTT-NN",
                                  value_name="bpb").dropna()
long["TTT-NN"] = long["TTT-NN"].map({"before": "before (k=0)", "after": f"after (k={scaling_k})"})
fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
sns.barplot(data=long, x="model", y="bpb", hue="TTT-NN", ax=axes[0], palette=list(SERIES_GREYS[1:3][::-1]))
axes[0].set_xlabel("model (smallest first)")
axes[0].set_ylabel("Pile-weighted bits per byte (lower is better)")
axes[0].set_title("this study: mini-Pile\n(Pile-weighted)")
paper_ladder = paper.pile_all_frame()
paper_ladder = paper_ladder[paper_ladder["k"].isin([0, 50]) & ~paper_ladder["model"].str.contains("split")].copy()
paper_ladder["TTT-NN"] = paper_ladder["k"].map({0: "before (k=0)", 50: "after (k=50)"})
sns.barplot(data=paper_ladder, x="model", y="bpb", hue="TTT-NN", ax=axes[1], palette=list(SERIES_GREYS[1:3][::-1]))
axes[1].set_xlabel("model (smallest first)")
axes[1].set_ylabel("Pile-weighted bits per byte (lower is better)")
axes[1].set_title("Hardt & Sun (2024): the Pile\n(paper's numbers)")
for ax in axes:
    ax.tick_params(axis="x", rotation=20)
    ax.legend(title="", fontsize="small", loc="lower left")
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.2f", fontsize="x-small")
fig.tight_layout()

# %% [markdown]
# ## How this was run
# The paper: GPT-2 (117M) after TTT-NN on 50 neighbours narrows much of the gap to GPT-Neo (1.3B, ten times
# larger) before it. Here the packaged ladder SmolLM2-135M, Gemma-3-270M, Qwen2.5-Coder-0.5B (and
# Qwen2.5-Coder-1.5B, scored without training on a CPU: its AdamW state does not fit in 24 GB; `params/full.yml`
# trains it with `adafactor_models`, a named deviation) is run on the
# same test documents with the same index. Bits per byte divide by UTF-8 bytes, not tokens, so models with
# different tokenizers are comparable.

# %% [markdown]
# ## Bits per byte before and after TTT-NN, per model
# "after" is empty for a model scored without training (`score_only_models`); "doc. change %" is the mean
# per-document change with its 95 % interval.

# %% tags=["hide-input"]
show_table(overall, 4)
show_table(results.pivot(index="domain", columns="model", values=["before", "after"]), 4)

# %% [markdown]
# ## Does the smaller model after TTT-NN reach the larger one before it?
# "gap closed %" is the share of the before-TTT gap between the two models that TTT-NN removes (100 % or more
# means reached; negative means TTT-NN made the smaller model worse; empty when the larger model was not
# better before TTT-NN); "doc. change %" is the smaller model after against the larger before, per document.

# %% tags=["hide-input"]
display(Markdown("\n".join(f"- {reach_sentence(small, large)}" for small, large in pairs)))
show_table(comparison, 4)

# %% [markdown]
# The paper's version of this claim:

# %% tags=["hide-input"]
show_table(pd.DataFrame([{"smaller": small, "larger": large, "smaller after (k=50)": paper_k[small][50],
                       "larger before": paper_k[large][0], "smaller before": paper_k[small][0],
                       "gap closed %": gap_closed(paper_k[small][0], paper_k[small][50], paper_k[large][0]),
                       "reached": paper_k[small][50] <= paper_k[large][0]}
                      for small in ["GPT-2 117M"] for large in ("GPT-2 Large 774M", "GPT-Neo 1.3B")]).round(4))

# %% tags=["remove-input"]
# Shown only when `bos_ablation_models` is set (params/full.yml sets it).
if bos_effects:
    display(Markdown(
        "**Training chunks with and without BOS.** A tokenizer such as Gemma's puts `<bos>` in front of every "
        "text; the model never saw text without it in pretraining. Since method version 2 every training chunk of "
        "such a model starts with BOS (`train_with_bos=True`); `bos_ablation_models` runs the same documents, "
        "neighbours and k with the chunks of method version 1 (no special tokens), so the effect of the fix is "
        "measured, not assumed."))
    show_table(pd.DataFrame([{"model": n, "tokenizer adds BOS": b, "without BOS %": w.percent,
                           "low %": w.percent_low, "high %": w.percent_high,
                           "with BOS %": changes[n].percent, "low % ": changes[n].percent_low,
                           "high % ": changes[n].percent_high, "with vs without %": e.percent,
                           "low  %": e.percent_low, "high  %": e.percent_high} for n, (w, e, b) in bos_effects.items()]
                         ).set_index("model").round(3).T)

# %% [markdown]
# ## Reproduce this page
# {download}`Download the executed notebook <05_model_scaling.ipynb>` (every output of this page, with its code).

# %% tags=["remove-input"]
display(reproduce("05_model_scaling", params_file, run_keys, config.work_dir))

# %% [markdown]
# ## The configuration that produced these numbers
# The shared configuration; each model's run replaces `model`, `k` (`scaling_k`) and `docs_per_domain`.

# %% tags=["hide-input"]
show_configuration(config)
