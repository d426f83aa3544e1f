"""The Python sources. code_python: the CPython standard library's own *.py modules (PSF-2.0) from this interpreter's
stdlib directory, test suites and site-packages left out; version: the interpreter's (sys.version). python_docs: the
reStructuredText sources (*.rst.txt) of the Python 3.11 documentation from the Debian package python3.11-doc
(PSF-2.0; version from dpkg). package_docs: the long descriptions (README text, HTML tags stripped) of the 165
pinned distributions of PACKAGE_DOCS_DISTRIBUTIONS as installed here, each under its own licence (see its
METADATA); version: the count and a sha1 of their name==version pins, marked where pinned ones are lacking. One
document per file (id: the path under the stdlib or docs folder) or per distribution (id: its normalised name);
each document is its own content group.
"""

from __future__ import annotations

import email.parser
import hashlib
import importlib.metadata
import os
import re
import sysconfig
import tokenize
import warnings
from pathlib import Path
from typing import Iterator

from .base import _shuffled


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


# --------------------------------------------------------------------------- python_docs

_PYDOC_ROOT = Path("/usr/share/doc/python3.11/html/_sources")


# --------------------------------------------------------------------------- package_docs


_HTML_TAG = re.compile(
    r"<!--.*?-->|</?(?:a|abbr|b|br|center|code|dd|details|div|dl|dt|em|h[1-6]|hr|i|img|kbd|li|ol|p|"
    r"picture|pre|source|span|strong|sub|summary|sup|table|tbody|td|th|thead|tr|tt|u|ul|video)\b[^>]*>",
    re.IGNORECASE | re.DOTALL,
)


def _strip_html_tags(text: str) -> str:
    """Light tag removal for Markdown READMEs that embed HTML (keeps `a < b` in code)."""
    return _HTML_TAG.sub("", text)


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
