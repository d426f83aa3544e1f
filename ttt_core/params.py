"""Parameters as they arrive from papermill (`-p`, `-f` YAML) or `python -m ttt_core prepare -f`: a notebook's
injected names checked against StudyConfig's fields and what the notebooks declare (types and misspelt names as
`checks`). The shared parameters are StudyConfig's fields (defaults and help text there only); a notebook's
parameters cell declares its chapter's own; the book's Parameters page is generated from the dataclass
(`parameters_page`).
"""
from __future__ import annotations

import dataclasses
import functools
import io
import re
import tokenize
from pathlib import Path

from .checks import unknown_parameters_error

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PARAMETERS_PAGE = Path(__file__).resolve().parents[1] / "book" / "parameters.md"


# ---- names -------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def declared_parameters(notebook: str, folder: Path = NOTEBOOKS) -> tuple[str, ...]:
    """Names notebooks/<notebook>.ipynb's parameters cell declares, as papermill reads them."""
    from papermill.inspection import inspect_notebook  # the notebooks extra

    path = Path(folder) / f"{notebook}.ipynb"
    if not path.exists():
        raise FileNotFoundError(f"no notebook {path}: the notebooks' parameters are read from the repository")
    return tuple(inspect_notebook(str(path)))


def notebook_parameters(folder: Path = NOTEBOOKS) -> set[str]:
    """Every name some notebook declares (a parameter file such as params/study.yml goes to every notebook)."""
    return {name for path in Path(folder).glob("*.ipynb") for name in declared_parameters(path.stem, Path(folder))}


# IPython's own names in a kernel's namespace (underscored names are skipped as well)
_IPYTHON_NAMES = {"In", "Out"}
_PARAMETER_TYPES = (str, int, float, bool, type(None), list, tuple, dict)


@functools.lru_cache(maxsize=None)
def assigned_names(notebook: str, folder: Path = NOTEBOOKS) -> frozenset[str]:
    """Every name notebooks/<notebook>.ipynb binds in its own code (assignments, loops, imports, definitions): in
    a kernel that already ran it (Jupyter's "Run All" again) these are left-overs of the last run, not injections."""
    import ast

    import nbformat

    names = set()
    for cell in nbformat.read(Path(folder) / f"{notebook}.ipynb", as_version=4).cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # a cell with IPython magics binds nothing we need
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return frozenset(names)


@functools.lru_cache(maxsize=None)
def _cells_through_config(notebook: str, folder: Path = NOTEBOOKS) -> int:
    """Code cells of notebooks/<notebook>.ipynb up to and including the one that calls `notebook_config`."""
    import nbformat

    cells = [c for c in nbformat.read(Path(folder) / f"{notebook}.ipynb", as_version=4).cells if c.cell_type == "code"]
    return next((i + 1 for i, c in enumerate(cells) if "notebook_config(" in c.source), len(cells))


def notebook_config(namespace: dict, notebook: str, folder: Path = NOTEBOOKS):
    """The StudyConfig of a notebook run by papermill, from its globals right after the parameters cell.

    Call it before the cell binds any other name. A value in `namespace` that is no StudyConfig field and that
    `notebook`'s parameters cell does not declare was injected: a name another notebook declares is accepted (one
    parameter file feeds every chapter), any other raises ValueError naming it and the nearest valid name; a name the
    notebook itself binds later is taken for a left-over only in a kernel that has run more cells than lead here
    (Jupyter's "Run All" again), never in papermill's fresh kernel. Types as `checks.check_types`."""
    from .config import StudyConfig

    known = set(declared_parameters(notebook, Path(folder))) | study_fields()
    given = {name for name, value in namespace.items()
             if not name.startswith("_") and name not in _IPYTHON_NAMES and isinstance(value, _PARAMETER_TYPES)}
    # A kernel that has run no more cells than lead to this one (papermill's: parameters, injected parameters, this
    # cell) holds no left-overs, so a name the notebook assigns later (`kk`, `rows`) was injected: refused.
    executed = len(namespace.get("In", ())) - 1
    ran_before = executed > _cells_through_config(notebook, Path(folder)) + 1
    unknown = (given - known - notebook_parameters(folder)
               - (assigned_names(notebook, Path(folder)) if ran_before else frozenset()))
    if unknown:
        raise unknown_parameters_error(unknown, known, f" for notebook {notebook}")
    return StudyConfig.from_namespace(namespace)


def study_fields() -> set[str]:
    """The shared parameters: every StudyConfig field but `extra`."""
    from .config import StudyConfig

    return {f.name for f in dataclasses.fields(StudyConfig)} - {"extra"}


def with_overrides(params: dict, overrides=()) -> dict:
    """`params` (a parameter file's) updated by `overrides`, (name, text) pairs read as papermill's `-p` reads them
    (int, float, bool, None, else text); papermill is imported only when there are overrides."""
    params = dict(params or {})
    if overrides:
        from papermill.cli import _resolve_type

        params.update({name: _resolve_type(text) for name, text in overrides})
    return params


def study_parameters(params: dict, folder: Path = NOTEBOOKS, where: str = " in the parameter file") -> dict:
    """The StudyConfig fields of `params` (a parameter file, or the `-p` values of one run). A name that is no field
    and that no notebook in `folder` declares is a typo: a ValueError naming it and the nearest valid name."""
    fields = study_fields()
    # The notebooks are read (with papermill, the notebooks extra) only for names that are no StudyConfig field:
    # the paper's parameter files hold fields alone, so `ray-run` needs only the scale extra.
    declared = notebook_parameters(folder) if set(params) - fields else set()
    unknown = set(params) - fields - declared
    if unknown:
        raise unknown_parameters_error(unknown, fields | declared, where)
    return {k: v for k, v in params.items() if k in fields}


# ---- the parameter reference, generated from the dataclass -------------------------------------------------------
def _literal(value) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if isinstance(value, str) else repr(value)


def parameter_reference() -> list[tuple[str, str, str, str]]:
    """(section, name, default, help) of every StudyConfig field but `extra`, in the class's order: the help is the
    comment above a field and the one beside it; a `#:` comment starts a section."""
    import inspect

    from . import config

    source = inspect.getsource(config.StudyConfig)
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = (token.string, token.line.strip().startswith("#"))
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(config.StudyConfig)}
    rows, above, section = [], [], ""
    for number, line in enumerate(source.splitlines(), 1):
        if number in comments and comments[number][1]:
            text = comments[number][0]
            if text.startswith("#:"):
                section, above = text[2:].strip(), []
            else:
                above.append(text[1:].strip())
            continue
        field = re.match(r"\s{4}(\w+)\s*:", line)
        if field and field.group(1) in defaults:
            name = field.group(1)
            inline = comments.get(number, ("", False))[0]
            if name != "extra":
                help_text = " ".join(above + ([inline[1:].strip()] if inline else []))
                rows.append((section, name, _literal(defaults[name]), help_text))
            above = []
        elif re.match(r"\s{4}(def |@)", line):  # the methods: no more fields
            break
    return rows


def parameters_page() -> str:
    """The book's Parameters page (book/parameters.md), Markdown: one table per section of StudyConfig."""
    out = ["# Parameters", "",
           "Every shared parameter of the study, generated from `ttt_core/config.py` (`StudyConfig`, the one place "
           "that defines each default) by `python -m ttt_core parameters-page`; `tests/test_config.py` fails when "
           "this page and the class differ. Pass any of them to any notebook (`papermill notebooks/02_ttt.ipynb "
           "out.ipynb -p k 5`) or in a parameter file (`-f params/study.yml`). Each chapter's own parameters are "
           "the first cell of its notebook; where the offline default departs from the paper, the methods chapter "
           "lists the deviation.", ""]
    section = None
    for sect, name, default, help_text in parameter_reference():
        if sect != section:
            section = sect
            out += ["", f"## {sect}", "", "| parameter | default | meaning |", "| --- | --- | --- |"]
        cell = help_text.replace("|", "\\|")
        out.append(f"| `{name}` | `{default}` | {cell} |")
    return "\n".join(out) + "\n"


def write_parameters_page(path: Path = PARAMETERS_PAGE) -> bool:
    """Write `parameters_page()` to `path`; whether it changed."""
    text = parameters_page()
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True
