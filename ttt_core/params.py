"""Parameters as they arrive from papermill (`-p`, `-f` YAML) or `python -m ttt_core prepare -f`: a notebook's
injected names checked against what the notebooks declare (types and misspelt names as `checks`), and the
StudyConfig part of every notebook's parameters cell generated from the dataclass so that no default drifts.
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
BLOCK_BEGIN = ("# StudyConfig fields, generated from ttt_core/config.py by `python -m ttt_core sync-parameters` "
               "(change them there)")
BLOCK_END = "# End of the StudyConfig fields; this notebook's own parameters follow"


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


def notebook_config(namespace: dict, notebook: str, folder: Path = NOTEBOOKS):
    """The StudyConfig of a notebook run by papermill, from its globals right after the parameters cell.

    Call it before the cell binds any other name. A parameter value in `namespace` that `notebook`'s parameters
    cell does not declare was injected: a name another notebook declares is accepted (one parameter file feeds
    every chapter), any other raises ValueError naming it and the nearest declared name. Types as `checks.check_types`."""
    from .config import StudyConfig

    declared = set(declared_parameters(notebook, Path(folder)))
    given = {name for name, value in namespace.items()
             if not name.startswith("_") and name not in _IPYTHON_NAMES and isinstance(value, _PARAMETER_TYPES)}
    unknown = given - declared - notebook_parameters(folder) - assigned_names(notebook, Path(folder))
    if unknown:
        raise unknown_parameters_error(unknown, declared, f" for notebook {notebook}")
    return StudyConfig.from_namespace(namespace)


# ---- the generated part of every parameters cell -----------------------------------------------------------------
def _literal(value) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if isinstance(value, str) else repr(value)


def parameters_block() -> str:
    """Every StudyConfig field (but `extra`) as `name = default`, with the comments the dataclass gives it."""
    import inspect

    from . import config

    source = inspect.getsource(config.StudyConfig)
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = (token.string, token.line.strip().startswith("#"))
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(config.StudyConfig)}
    lines, above = [BLOCK_BEGIN], []
    for number, line in enumerate(source.splitlines(), 1):
        if number in comments and comments[number][1]:
            above.append(comments[number][0])
            continue
        field = re.match(r"\s{4}(\w+)\s*:", line)
        if field and field.group(1) in defaults:
            name = field.group(1)
            if name != "extra":
                inline = comments.get(number, ("", False))[0]
                lines += above + [f"{name} = {_literal(defaults[name])}" + (f"  {inline}" if inline else "")]
            above = []
        elif re.match(r"\s{4}(def |@)", line):  # the methods: no more fields
            break
    return "\n".join(lines + [BLOCK_END])


_CELL = re.compile(r'(# %% tags=\["parameters"[^\]]*\]\n)(.*?)(?=\n# %%)', re.S)


def sync_parameters(folder: Path = NOTEBOOKS) -> list[Path]:
    """Write `parameters_block()` into every notebooks/*.py parameters cell (the StudyConfig lines it held are
    replaced; the notebook's own parameters stay after it) and `jupytext --sync` its .ipynb. Returns the changed."""
    import subprocess
    import sys

    from .config import StudyConfig

    fields = {f.name for f in dataclasses.fields(StudyConfig)}
    block, changed = parameters_block(), []
    for script in sorted(Path(folder).glob("*.py")):
        text = script.read_text()
        match = _CELL.search(text)
        if match is None:
            continue
        body = match.group(2)
        if BLOCK_BEGIN in body:
            body = body[body.index(BLOCK_END) + len(BLOCK_END):].lstrip("\n")
        own = [line for line in body.splitlines() if (re.match(r"(\w+)\s*=", line) or [None, None])[1] not in fields]
        new = text[:match.start(2)] + block + "\n" + "".join(line + "\n" for line in own) + text[match.end(2):]
        if new != text:
            script.write_text(new)
            subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(script)], check=True,
                           capture_output=True)
            changed.append(script)
    declared_parameters.cache_clear()
    return changed
