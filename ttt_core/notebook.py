"""Running one chapter: papermill, with its parameters checked before the kernel starts, its cell output streamed
to the terminal and its finding printed when it ends (`python -m ttt_core run`; `make` runs every chapter so).

Plain `papermill notebooks/02_ttt.ipynb out.ipynb -p k 5` runs the same notebook with the same numbers; it also
logs "Passed unknown parameter" for each shared parameter, because a notebook declares only its own (the shared
ones are StudyConfig's fields, checked by the notebook's first code cell, `params.notebook_config`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from .config import REPO_ROOT, StudyConfig
from .params import notebook_parameters, study_fields, study_parameters, with_overrides

RUNS = REPO_ROOT / "runs"  # where `run` writes an executed notebook unless told (git-ignored)


class _SharedParameterFilter(logging.Filter):
    """Drops papermill's "Passed unknown parameter: NAME" for names the study knows (a shared parameter, or a
    parameter of another chapter from a file that feeds every chapter): they are not unknown."""

    def __init__(self, known: set[str]):
        super().__init__()
        self.known = known

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        prefix = "Passed unknown parameter: "
        return not (message.startswith(prefix) and message[len(prefix):].strip() in self.known)


def check_parameters(notebook: Path, params: dict) -> StudyConfig:
    """The configuration `params` give `notebook`, checked before any kernel starts: names as
    `params.study_parameters` (a ValueError naming the nearest valid one), types and values as
    `StudyConfig.from_params(...).validate()`."""
    fields = study_parameters(params, notebook.parent, f" for notebook {notebook.stem}")
    return StudyConfig.from_params(**fields).validate()


def glued_finding(executed: Path) -> str | None:
    """The Markdown a chapter glued as its finding (`report.FINDING`), read from an executed notebook; None if it
    glued none (a chapter that stopped early)."""
    from .report import FINDING, glued_outputs

    return glued_outputs(executed).get(FINDING, {}).get("text/markdown")


def run_notebook(notebook: str | Path, output: str | Path | None = None, params: dict | None = None,
                 overrides=(), params_file: str = "") -> Path:
    """Execute `notebook` (an .ipynb of notebooks/) with papermill into `output` (default runs/<name>.ipynb) and
    return that path. `params` come from a parameter file, `overrides` are (name, text) pairs read as papermill's
    `-p` reads them (int, float, bool, None, else text). Errors: FileNotFoundError for a missing notebook,
    ValueError for a .py (papermill reads the .ipynb of a jupytext pair) or a bad parameter; papermill's
    PapermillExecutionError when a cell fails (the partial notebook is written to `output` first)."""
    import papermill

    notebook = Path(notebook)
    if notebook.suffix != ".ipynb":
        raise ValueError(f"{notebook}: papermill runs the .ipynb of a jupytext pair "
                         f"({notebook.with_suffix('.ipynb')})")
    if not notebook.exists():
        raise FileNotFoundError(f"no notebook {notebook}; the chapters are notebooks/*.ipynb")
    params = with_overrides(params, overrides)
    if params_file:
        params.setdefault("params_file", params_file)
    check_parameters(notebook, params)
    output = Path(output) if output else RUNS / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shared = _SharedParameterFilter(study_fields() | notebook_parameters(notebook.parent))
    logger = logging.getLogger("papermill")
    logger.addFilter(shared)
    started = time.perf_counter()
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=params, cwd=str(REPO_ROOT),
                                   log_output=True, progress_bar=False)
    finally:
        logger.removeFilter(shared)
    minutes, seconds = divmod(round(time.perf_counter() - started), 60)
    finding = glued_finding(output)
    print(f"\n{notebook.stem} finished in {minutes} min {seconds} s: {output}")
    if finding:
        print(f"Finding:\n{finding}")
    return output
