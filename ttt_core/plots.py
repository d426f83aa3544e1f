"""Figures: seaborn, labelled axes with units, one colour per domain in every chapter (`domain_colors`), direct
labels or small multiples instead of long legends. Sized to be read at 1,280 px."""
from __future__ import annotations

import math
import zlib

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .minipile import SOURCES

AGGREGATE_COLOR = "black"
# Series that are not domains (arms, protocols, before/after) are drawn in greys, so that no colour is ever
# read as a domain's.
SERIES_GREYS = ("0.1", "0.5", "0.75")
AGGREGATES = ("Pile-weighted", "all documents", "plain mean")
# tab20 alternates dark and light shades of ten hues: all the dark ones first, then the light ones.
_PALETTE = [sns.color_palette("tab20", 20)[i] for i in list(range(0, 20, 2)) + list(range(1, 20, 2))]
_KNOWN = list(dict.fromkeys(s.domain for s in SOURCES))
# The book's text column is about 700 px wide at a 1,280 px window: figures of 10-11 inches are shrunk to about
# two thirds, so their text is set large enough to stay readable after that.
REPORT_STYLE = {"font.size": 13, "axes.titlesize": 13, "axes.labelsize": 13, "xtick.labelsize": 12,
                "ytick.labelsize": 12, "legend.fontsize": 12, "legend.title_fontsize": 12, "figure.titlesize": 14,
                "figure.dpi": 100, "savefig.dpi": 100}


def use_report_style() -> None:
    """Every chapter calls this once, so all figures share one type size and the seaborn look."""
    sns.set_theme(style="ticks", rc=REPORT_STYLE)


def domain_colors(domains) -> dict[str, tuple]:
    """The same colour for a domain in every figure: the mini-Pile's domains in a fixed order, any other name
    (a Pile task, a test corpus) by a stable hash into the remaining colours, aggregates in black."""
    spare = _PALETTE[len(_KNOWN):] or _PALETTE
    colors = {}
    for d in domains:
        if d in AGGREGATES:
            colors[d] = AGGREGATE_COLOR
        elif d in _KNOWN:
            colors[d] = _PALETTE[_KNOWN.index(d) % len(_PALETTE)]
        else:
            colors[d] = spare[zlib.crc32(str(d).encode()) % len(spare)]
    return colors


def plot_change_by_domain(changes: pd.DataFrame, overall: tuple[str, float, float, float] | None = None,
                          xlabel: str = "change in bits per byte (%)", title: str = ""):
    """One row per domain: the mean per-document change (%) with its 95 % interval (`changes`: index domain,
    columns change %, low %, high %, documents), largest gain on top, and the aggregate (label, mean, low,
    high) in black below a rule. A row whose bounds are NaN (one document: no interval) is a point only, its
    label saying so. Domain names are the y labels, so no legend is needed."""
    frame = changes.sort_values("change %", ascending=False)
    colors = domain_colors(frame.index)
    fig, ax = plt.subplots(figsize=(10, 0.42 * (len(frame) + 2) + 1.2))

    def point(x, y, low, high, **style):
        has_interval = not (pd.isna(low) or pd.isna(high))
        ax.errorbar(x, y, xerr=[[x - low], [high - x]] if has_interval else None, **style)
        return has_interval

    labels = []
    for y, (domain, row) in enumerate(frame.iterrows()):
        drawn = point(row["change %"], y, row["low %"], row["high %"], fmt="o", color=colors[domain], capsize=3,
                      markersize=7, lw=1.8)
        labels.append(f"{domain} ({int(row['documents'])})" if "documents" in frame else str(domain))
        if not drawn:
            labels[-1] += ", no interval"
    if overall is not None:
        label, mean, low, high = overall
        y = len(frame) + 0.6
        ax.axhline(len(frame) - 0.2, color="grey", lw=0.6)
        if not point(mean, y, low, high, fmt="s", color=AGGREGATE_COLOR, capsize=4, markersize=8, lw=2.4):
            label += ", no interval"
        ax.set_yticks(list(range(len(frame))) + [y], labels + [label])
        ax.get_yticklabels()[-1].set_fontweight("bold")
    else:
        ax.set_yticks(range(len(frame)), labels)
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_xlabel(xlabel + ", mean per document with 95 % interval")
    ax.set_ylabel("domain (test documents)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_change_vs_k(per_domain: pd.DataFrame, overall: pd.DataFrame, ylabel: str = "change in bits per byte (%)",
                     title: str = "", columns: int = 4):
    """Small multiples: one panel per domain with its mean per-document change (%) against k in its colour, and
    in every panel the mean over all documents (black, with its 95 % band) for reference. Each panel has its
    own y scale (one domain's gain can be ten times another's; the per-domain sizes are in the TTT-NN chapter's
    figure). `per_domain`: columns domain, k, change %; `overall`: columns k, change %, low %, high %."""
    domains = list(per_domain.groupby("domain")["change %"].min().sort_values().index)
    colors = domain_colors(domains)
    rows = math.ceil(len(domains) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.75 * columns, 2.4 * rows + 1.0), sharex=True, sharey=False,
                             squeeze=False)
    for ax, domain in zip(axes.flat, domains):
        ax.fill_between(overall["k"], overall["low %"], overall["high %"], color=AGGREGATE_COLOR, alpha=0.12)
        ax.plot(overall["k"], overall["change %"], color=AGGREGATE_COLOR, lw=1.2)
        curve = per_domain[per_domain["domain"] == domain].sort_values("k")
        ax.plot(curve["k"], curve["change %"], color=colors[domain], marker="o", lw=2.2, markersize=4)
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_title(domain, fontsize="medium")
    for ax in axes.flat[len(domains):]:
        ax.axis("off")
    for column in range(columns):  # the lowest panel in use of each column carries the k axis
        used = [r for r in range(rows) if r * columns + column < len(domains)]
        if used:
            bottom = axes[used[-1], column]
            bottom.xaxis.set_tick_params(labelbottom=True)
            bottom.set_xlabel("neighbours, k")
    fig.supylabel(ylabel)
    fig.suptitle(title + "\n(black: mean over all documents with its 95 % band; each panel its own scale)"
                 if title else "black: mean over all documents with its 95 % band; each panel its own scale")
    fig.tight_layout()
    return fig


def plot_training(training: pd.DataFrame):
    """Training loss on the i-th neighbour and seconds per neighbour (one step per chunk plus re-scoring)."""
    colors = domain_colors(training["domain"].unique())
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    sns.lineplot(data=training, x="neighbor", y="loss", hue="domain", ax=left, palette=colors, legend=False,
                 errorbar=None)
    left.set_xlabel("neighbour index i (nearest first)")
    left.set_ylabel("training loss on neighbour i (nats/token)")
    left.set_title("one line per domain\n(colours as in the bar chart)")
    order = training.groupby("domain")["seconds"].mean().sort_values().index
    sns.barplot(data=training, y="domain", x="seconds", ax=right, errorbar=("pi", 80), order=order,
                hue="domain", palette=colors, legend=False)
    right.set_ylabel("")
    right.set_xlabel("seconds per neighbour\n(mean, 10-90 % of steps)")
    fig.tight_layout()
    return fig


def plot_domain_sizes(summary: pd.DataFrame):
    """Bytes per domain in the index (train) and held out (test)."""
    cols = [c for c in summary.columns if c.startswith("bytes")]
    long = summary[cols].reset_index().melt(id_vars="domain", var_name="split", value_name="bytes")
    long["kilobytes"] = long["bytes"] / 1000
    fig, ax = plt.subplots(figsize=(10, 4.8))
    sns.barplot(data=long, y="domain", x="kilobytes", hue="split", ax=ax, palette=list(SERIES_GREYS[:2]))
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), title="", frameon=False)
    ax.set_xlabel("text (kB of UTF-8)")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig
