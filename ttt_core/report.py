"""The report around the numbers: a verdict in words for each claim, findings glued for the landing page
(myst-nb `glue`, so the book never types a number of ours), and the "reproduce this page" block."""
from __future__ import annotations

import shlex
from pathlib import Path

import nbformat
from IPython.display import Markdown

from .metrics import PairedChange

REPRODUCED, NOT_REPRODUCED, NOT_RESOLVED = "reproduced", "not reproduced", "not resolved at this scale"
HOLDS, DOES_NOT_HOLD = "holds", "does not hold"


def verdict(change: PairedChange, lower_is_claimed: bool = True, paper_claim: bool = True) -> str:
    """The paper's claim (B lower than A when `lower_is_claimed`) against our paired interval: reproduced when the
    interval excludes zero on the claimed side, not reproduced when it excludes zero on the other side, not
    resolved when it includes zero. A claim the paper did not test (a control of ours) holds or does not."""
    if not change.excludes_zero:
        return NOT_RESOLVED
    claimed = (change.percent < 0) == lower_is_claimed
    if paper_claim:
        return REPRODUCED if claimed else NOT_REPRODUCED
    return HOLDS if claimed else DOES_NOT_HOLD


def signed(x: float) -> str:
    """'+1.8', '-3.7', and '0.0' for anything that rounds to zero (never '-0.0')."""
    text = f"{x:+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def interval_text(change: PairedChange) -> str:
    """'-3.7 % (-4.6 to -2.9), 26 documents': the mean per-document change with its 10-90 % interval."""
    return (f"{signed(change.percent)} % ({signed(change.percent_low)} to {signed(change.percent_high)}), "
            f"{change.n_documents} documents")


def glue_text(key: str, text: str) -> None:
    """Store `text` in the executed notebook under `key` for `{glue:text}` on another page (nothing displayed)."""
    from myst_nb import glue  # imported here: only the notebooks need it

    glue(key, str(text), display=False)


FINDING = "finding"
# The chapter's title cell pastes this key, so the finding stands directly under the title on the rendered page,
# above the folded code that computed it (myst-nb resolves a glue key from any cell of the same notebook).
FINDING_DIRECTIVE = "```{glue:md} finding\n:format: myst\n```"


def show_finding(*paragraphs: str) -> None:
    """Display the chapter's finding (in Jupyter) and glue it as `finding` for the title cell (in the book, where
    the cell itself is removed)."""
    from myst_nb import glue

    glue(FINDING, Markdown("\n\n".join(paragraphs)), display=True)


def glue_finding(key: str, change: PairedChange, lower_is_claimed: bool = True, paper_claim: bool = True,
                 note: str = "") -> None:
    """Glue `key` (the interval text, with `note` after it) and `key_verdict`."""
    glue_text(key, interval_text(change) + (f", {note}" if note else ""))
    glue_text(f"{key}_verdict", verdict(change, lower_is_claimed, paper_claim))


def reproduce(notebook: str, params_file: str, run_keys: dict[str, str], work_dir: str) -> Markdown:
    """The commands that re-create a chapter, its run keys and where their result rows live."""
    out = f"book/executed/{notebook}.ipynb"
    params = f"-f {shlex.quote(params_file)}" if params_file else "-f <your parameter file>"
    keys = "\n".join(f"| {label} | `{key}` | `{Path(work_dir) / 'results' / (key + '.jsonl')}` |"
                     for label, key in run_keys.items())
    return Markdown(
        f"Re-run this chapter (finished documents are read back from the results files, so a rerun with the same "
        f"configuration only re-renders):\n\n"
        f"```bash\npapermill notebooks/{notebook}.ipynb {out} {params}"
        + (f" -p params_file {shlex.quote(params_file)}" if params_file else "")
        + f" --cwd .\npython -m ttt_core mark-for-book {out}\njupyter-book build book/ -W --keep-going\n```\n\n"
        f"or `make` for every chapter. The run key names every input of a result (`Study.run_key`: the "
        f"configuration, what the index holds, the weights, the library versions, the code version):\n\n"
        f"| run | key | result rows |\n|---|---|---|\n{keys}\n")


def mark_for_book(path: str | Path) -> None:
    """Hide what papermill injected from the rendered page: its parameter cell becomes `remove-cell` (the
    configuration table at the end of each chapter shows the values)."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(notebook, path)
