"""The math_generated source: question/answer pairs from DeepMind's mathematics-dataset 1.0.1 (PyPI, Apache-2.0;
pinned in pyproject.toml), generated on the fly from its train-easy modules (the lowest third of the entropy range),
50 of its 56 modules, the 6 slowest skipped. Two of its modules are re-executed from patched source (three fixes
for sympy >= 1.6 and numpy >= 2, and sorted/insertion order where it iterated over sets) so that the text depends
only on the seed; Python's, numpy's and sympy's RNGs are swapped for private seeded ones while a batch is made. One
document is a batch of 30-60 pairs (id 'seed<seed>-batch-<nnnn>'), its own content group; the stream is endless,
so the source is capped at MATH_MAX_BYTES.
"""

from __future__ import annotations

import importlib.util
import random
import re
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator


# Modules that generate text slowly (under 8 kB/s on one core when this list was made): left out, so that the
# domain's budget fills in seconds.
_SLOW_MATH_MODULES = frozenset(
    {
        "arithmetic__simplify_surd",
        "probability__swr_p_level_set",
        "probability__swr_p_sequence",
        "polynomials__expand",
        "algebra__polynomial_roots",
        "calculus__differentiate",
    }
)
_MATH_PATCH_MARK = "_minipile_patched"
# math_generated's cap (TextSource.max_bytes): it binds only on a large mini-Pile (domain_bytes > 2 MB).
MATH_MAX_BYTES = 2_000_000

# Source rewrites (regex, replacement) applied to two mathematics-dataset 1.0.1 modules.
_MATH_SOURCE_PATCHES: dict[str, list[tuple[str, str]]] = {
    # The 3 fixes mathematics-dataset 1.0.1 (PyPI, Apache-2.0; pinned in pyproject.toml) needs beside
    # sympy >= 1.6 and numpy >= 2 all concern sample/polynomials.py:
    "mathematics_dataset.sample.polynomials": [
        (  # 1. base_solution_linear moved into sympy.solvers.diophantine.diophantine
            re.escape("from sympy.solvers.diophantine import base_solution_linear"),
            "from sympy.solvers.diophantine.diophantine import base_solution_linear",
        ),
        (r"\bnp\.object\b", "object"),  # 2. np.object was removed
        (r"(\w+)\.itemset\(([^,]+), ([^)]+)\)", r"\1[\2] = \3"),  # 3. ndarray.itemset was removed
    ],
    # Determinism: composition picks symbol names from a set of str (order depends on
    # PYTHONHASHSEED) and orders entities via a set of objects hashed by id (memory
    # layout); use sorted / insertion order so output depends only on the seeds.
    "mathematics_dataset.util.composition": [
        (re.escape("random.choice(list(allowed))"), "random.choice(sorted(allowed))"),
        (re.escape("entities = set(context.child_entities)"), "entities = dict.fromkeys(context.child_entities)"),
        (re.escape("entities.add(maybe_entity)"), "entities[maybe_entity] = None"),
    ],
}


def _patch_math_module(name: str, patches: list[tuple[str, str]]) -> None:
    """Re-execute module `name` from its patched source (idempotent).

    The code runs in the existing module object if it was imported already, so
    modules that hold a reference to it see the fixed functions. Nothing in numpy
    or sympy is modified.
    """
    module = sys.modules.get(name)
    if module is not None and getattr(module, _MATH_PATCH_MARK, False):
        return
    spec = importlib.util.find_spec(name)
    src = Path(spec.origin).read_text(encoding="utf-8")
    for old, new in patches:
        patched = re.sub(old, new, src)
        if patched == src:
            raise RuntimeError(f"mathematics-dataset patch did not apply to {name}: {old!r}")
        src = patched
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, module)
    exec(compile(src, spec.origin, "exec"), module.__dict__)
    setattr(module, _MATH_PATCH_MARK, True)


def _patch_mathematics_dataset() -> None:
    for name, patches in _MATH_SOURCE_PATCHES.items():
        _patch_math_module(name, patches)


def _math_modules() -> dict[str, Callable]:
    """The train-easy generators, flattened like generate.py does, minus the slow ones.

    We do not import mathematics_dataset.generate: it needs parsed absl flags.
    """
    _patch_mathematics_dataset()
    from mathematics_dataset.modules import modules

    def easy(range_):  # generate._make_entropy_fn(0, 3): lowest third of the entropy
        return (range_[0], range_[0] + (range_[1] - range_[0]) / 3)

    flat: dict[str, Callable] = {}

    def add(tree: dict, prefix: str = "") -> None:
        for key, value in tree.items():
            name = f"{prefix}__{key}" if prefix else key
            if isinstance(value, dict):
                add(value, name)
            elif name not in _SLOW_MATH_MODULES:
                flat[name] = value

    add(modules.train(easy))
    return dict(sorted(flat.items()))


def _math_pair(module: Callable) -> str:
    from mathematics_dataset import generate_settings

    while True:  # same length filter as generate.sample_from_module
        problem = module()
        question, answer = str(problem.question), str(problem.answer)
        if len(question) <= generate_settings.MAX_QUESTION_LENGTH and len(answer) <= generate_settings.MAX_ANSWER_LENGTH:
            return f"{question}\n{answer}\n"


def _math_rngs(seed: int) -> list[tuple[Callable, Callable, object]]:
    """(getstate, setstate, private seeded state) for every RNG the generators draw from:
    Python's global `random`, numpy's global RandomState and sympy's own `rng`
    (used by sympy.randprime in the prime modules)."""
    import numpy as np
    from sympy.core import random as sympy_random

    return [
        (random.getstate, random.setstate, random.Random(f"py-{seed}").getstate()),
        (np.random.get_state, np.random.set_state, np.random.RandomState(seed).get_state()),
        (sympy_random.rng.getstate, sympy_random.rng.setstate, random.Random(f"sympy-{seed}").getstate()),
    ]


def _math_stream(seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
    """Endless batches of 30-60 Q/A pairs from a seeded mix of modules.

    We keep private seeded RNG states and swap them in only while a batch is
    generated, so output depends only on `seed` and callers' RNG streams are
    left untouched between yields.
    """
    generators = _math_modules()
    names = list(generators)
    picker = random.Random(f"picker-{seed}")
    rngs = _math_rngs(seed)
    batch = 0
    while True:
        saved = [get() for get, _, _ in rngs]
        for _, set_, private in rngs:
            set_(private)
        try:
            with warnings.catch_warnings():  # the 2019 code passes floats to random.randint
                warnings.simplefilter("ignore", DeprecationWarning)
                text = "".join(_math_pair(generators[picker.choice(names)]) for _ in range(picker.randint(30, 60)))
        finally:
            rngs = [(get, set_, get()) for get, set_, _ in rngs]
            for (_, set_, _), state in zip(rngs, saved):
                set_(state)
        yield f"seed{seed}-batch-{batch:04d}", text
        batch += 1
