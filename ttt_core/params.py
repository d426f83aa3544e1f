"""Parameters as they arrive from papermill (`-p`, `-f` YAML) or `python -m ttt_core prepare -f`: their types
checked against `StudyConfig`'s annotations and misspelt names refused with the nearest valid one. The shared
parameters are StudyConfig's fields (defaults and help text there only); a notebook's parameters cell declares its
chapter's own; the book's Parameters page is generated from the dataclass (`parameters_page`).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import io
import math
import re
import tokenize
import types
import typing
import warnings
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PARAMETERS_PAGE = Path(__file__).resolve().parents[1] / "book" / "parameters.md"


# ---- types -------------------------------------------------------------------------------------------------------
def _hint(annotation) -> tuple[object, bool]:
    """(base type, whether None is allowed) of a field annotation such as `int | None` or `tuple[str, ...]`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"no type rule for the annotation {annotation!r}")
        return args[0], True
    return annotation, False


def _describe(base, optional: bool) -> str:
    if typing.get_origin(base) is tuple:
        element = typing.get_args(base)[0]
        what = ("a string (comma-separated names) or a list of strings" if element is str else
                "a list (or a comma-separated string) of integers")
    else:
        what = {str: "a string", int: "an integer", float: "a float", bool: "True or False (a bool)",
                dict: "a mapping"}[base]
    return f"None or {what}" if optional else what


class _Invalid(Exception):
    pass


def _scalar(value, base):
    """`value` as `base`, and whether that took a conversion; _Invalid where the meaning is not clear."""
    if base is bool:
        if isinstance(value, bool):
            return value, False
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true", True
        raise _Invalid  # 1, 'yes', 'on': ambiguous in a file that YAML 1.1 already read
    if base is int:
        if isinstance(value, bool):
            raise _Invalid
        if isinstance(value, int):
            return value, False
        number = value
        if isinstance(value, str):
            try:
                return int(value.strip()), True
            except ValueError:
                number = _float(value)
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            return int(number), True
        raise _Invalid
    if base is float:
        if isinstance(value, bool):
            raise _Invalid
        if isinstance(value, int):
            return float(value), False  # an int is a float (PEP 484): nothing to say
        number = _float(value) if isinstance(value, str) else value
        if isinstance(number, float) and math.isfinite(number):
            return number, isinstance(value, str)
        raise _Invalid
    if base is str:
        if isinstance(value, str):
            return value, False
        raise _Invalid  # device=0: cuda:0 or cpu? Not guessed.
    if base is dict:
        if isinstance(value, dict):
            return value, False
        raise _Invalid
    raise TypeError(f"no type rule for {base!r}")


def _float(text: str):
    try:
        return float(text.strip())
    except ValueError:
        return None


def _convert(value, base, optional: bool):
    if value is None:
        if optional:
            return None, False
        raise _Invalid
    if typing.get_origin(base) is not tuple:
        return _scalar(value, base)
    element = typing.get_args(base)[0]
    if isinstance(value, str):  # the documented form: comma-separated
        items = [_scalar(v.strip(), element)[0] for v in value.split(",") if v.strip()]
        return tuple(items), False
    if isinstance(value, (list, tuple)):
        pairs = []
        for item in value:
            if element is str and isinstance(item, int) and not isinstance(item, bool):
                pairs.append((str(item), True))  # domains [2023]: a name that YAML read as a number
            else:
                pairs.append(_scalar(item, element))
        return tuple(v for v, _ in pairs), any(c for _, c in pairs) or not isinstance(value, (list, tuple))
    if isinstance(value, int) and not isinstance(value, bool):  # `-p domains 2023`, `-p eval_ks 5`
        return ((str(value),) if element is str else (value,)), True
    raise _Invalid


def check_types(params: dict, cls=None) -> dict:
    """`params` with every value of the type its `StudyConfig` field is annotated with.

    A value whose meaning is clear is converted and the conversion is said (a UserWarning): a string holding a
    number (PyYAML 1.1 reads `2e-5` as text), an integral float for an integer, 'true'/'false' for a bool, a
    number or a list item for a name (`domains 2023`). An int for a float passes silently. Anything else raises
    ValueError naming the parameter, its value and the valid type; names must already be fields."""
    from .config import StudyConfig

    cls = cls or StudyConfig
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in params.items():
        base, optional = _hint(hints[name])
        try:
            new, converted = _convert(value, base, optional)
        except (_Invalid, ValueError):
            tip = (" (write it as text: quoted in YAML, `-r NAME VALUE` in papermill)"
                   if base is str and isinstance(value, (int, float)) else "")
            raise ValueError(f"invalid {name}={value!r}: expected {_describe(base, optional)}{tip}") from None
        if converted:
            warnings.warn(f"parameter {name}={value!r} (type {type(value).__name__}) read as {new!r}, since "
                          f"{name} is {_describe(base, optional)}", stacklevel=3)
        out[name] = new
    return out


# ---- names -------------------------------------------------------------------------------------------------------
def unknown_parameters_error(unknown, known, where: str = "") -> ValueError:
    """One line naming each unknown parameter with the nearest known name (difflib), or the known names."""
    known = sorted(set(known))
    names, suggestions = sorted(unknown), {}
    for name in names:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            suggestions[name] = close[0]
    if len(names) == 1 and names[0] in suggestions:
        return ValueError(f"unknown parameter '{names[0]}'{where}: did you mean '{suggestions[names[0]]}'?")
    parts = [f"'{n}'" + (f" (did you mean '{suggestions[n]}'?)" if n in suggestions else "") for n in names]
    hint = "" if len(suggestions) == len(names) else f"; valid parameters: {', '.join(known)}"
    return ValueError(f"unknown parameter{'s' if len(names) > 1 else ''} {', '.join(parts)}{where}{hint}")


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

    Call it before the cell binds any other name. A value in `namespace` that is no StudyConfig field and that
    `notebook`'s parameters cell does not declare was injected: a name another notebook declares is accepted (one
    parameter file feeds every chapter), any other raises ValueError naming it and the nearest valid name. Types
    as `check_types`."""
    from .config import StudyConfig

    known = set(declared_parameters(notebook, Path(folder))) | study_fields()
    given = {name for name, value in namespace.items()
             if not name.startswith("_") and name not in _IPYTHON_NAMES and isinstance(value, _PARAMETER_TYPES)}
    unknown = given - known - notebook_parameters(folder) - assigned_names(notebook, Path(folder))
    if unknown:
        raise unknown_parameters_error(unknown, known, f" for notebook {notebook}")
    return StudyConfig.from_namespace(namespace)


def study_fields() -> set[str]:
    """The shared parameters: every StudyConfig field but `extra`."""
    from .config import StudyConfig

    return {f.name for f in dataclasses.fields(StudyConfig)} - {"extra"}


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
