"""Figures: seaborn, labelled axes with units."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def plot_bpb_vs_k(table: pd.DataFrame, intervals: pd.DataFrame | None = None, title: str = ""):
    """Bits per byte against the number of neighbours trained on, one line per domain, the Pile-weighted
    aggregate in black with its bootstrap band."""
    long = table.reset_index().melt(id_vars="domain", var_name="k", value_name="bpb")
    domains = long[long["domain"] != "Pile-weighted"]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    sns.lineplot(data=domains, x="k", y="bpb", hue="domain", marker="o", ax=ax, palette="tab20")
    overall = long[long["domain"] == "Pile-weighted"]
    ax.plot(overall["k"], overall["bpb"], color="black", linewidth=3, marker="s", label="Pile-weighted")
    if intervals is not None:
        band = intervals[intervals["domain"] == "Pile-weighted"].sort_values("k")
        ax.fill_between(band["k"], band["low"], band["high"], color="black", alpha=0.15,
                        label="Pile-weighted, 10-90% bootstrap")
    ax.set_xlabel("neighbours trained on, k")
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title(title or "TTT-NN: bits per byte against the number of neighbours")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def plot_training(training: pd.DataFrame):
    """Training loss on the i-th neighbour and seconds per neighbour (one step per chunk plus re-scoring)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    sns.lineplot(data=training, x="neighbor", y="loss", hue="domain", ax=left, palette="tab20", legend=False)
    left.set_xlabel("neighbour index i (nearest first)")
    left.set_ylabel("training loss on neighbour i (nats/token)")
    sns.barplot(data=training, x="domain", y="seconds", ax=right, errorbar=("pi", 80), color="tab:blue")
    right.set_xlabel("")
    right.set_ylabel("seconds per neighbour (training step)")
    right.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    return fig


def plot_domain_sizes(summary: pd.DataFrame):
    """Bytes per domain in the index (train) and held out (test)."""
    cols = [c for c in summary.columns if c.startswith("bytes")]
    long = summary[cols].reset_index().melt(id_vars="domain", var_name="split", value_name="bytes")
    long["kilobytes"] = long["bytes"] / 1000
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sns.barplot(data=long, y="domain", x="kilobytes", hue="split", ax=ax)
    ax.set_xlabel("text (kB of UTF-8)")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig
