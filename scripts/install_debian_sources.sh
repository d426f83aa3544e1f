#!/usr/bin/env bash
# Best-effort, idempotent install of the Debian packages that carry the
# optional "mini-Pile" text sources (see ttt_core/minipile/debian.py).
# Never fails the caller: every problem ends in a message and exit 0.
set -u

PACKAGES=(
  python3.11-doc          # python_docs: html/_sources/**/*.rst.txt
  texlive-latex-base-doc  # latex: *.tex, *.dtx(.gz)
  debian-handbook         # multilingual_handbook: html/<lang>/*.html
  wordnet-base            # glosses_wordnet: data.{noun,verb,adj,adv}
  linux-doc-6.1           # linux_docs: Documentation/**/*.rst(.gz)
  fortunes                # fortunes: %-separated quips
  jargon-text             # fortunes: the Jargon File
)

say() { echo "install_debian_sources: $*"; }

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
  say "apt-get/dpkg not available; skipping (Debian text sources stay unavailable)."
  exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  say "all ${#PACKAGES[@]} packages already installed."
  exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
  say "not root; cannot install: ${missing[*]}"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
say "installing: ${missing[*]}"
if ! apt-get update -qq; then
  say "apt-get update failed; trying to install from the existing package lists."
fi
if apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  say "done."
else
  # One bad package should not block the rest: retry one at a time.
  say "bulk install failed; retrying package by package."
  for p in "${missing[@]}"; do
    apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 \
      && say "installed $p" || say "could not install $p"
  done
fi
exit 0
