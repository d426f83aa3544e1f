"""Parameter values checked against a dataclass's field annotations (`StudyConfig.from_params` checks every
parameter so): a clearly meant value converted with a warning, anything else refused naming the valid type; and an
unknown name refused with the nearest known one. Imports nothing of ttt_core, so `config` and `params` both use it.
"""
from __future__ import annotations

import difflib
import math
import types
import typing
import warnings


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


def check_types(params: dict, cls) -> dict:
    """`params` with every value of the type its field of the dataclass `cls` (`StudyConfig`) is annotated with.

    A value whose meaning is clear is converted and the conversion is said (a UserWarning): a string holding a
    number (PyYAML 1.1 reads `2e-5` as text), an integral float for an integer, 'true'/'false' for a bool, a
    number or a list item for a name (`domains 2023`). An int for a float passes silently. Anything else raises
    ValueError naming the parameter, its value and the valid type; names must already be fields."""
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
