#!/usr/bin/env bash
# Create .venv/ with the pinned dependencies of pyproject.toml (the one place pins live) and install the
# engine in editable mode. Idempotent: a stamp named after pyproject.toml's hash skips a finished install.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing the pinned environment into .venv/ (a few minutes, once)" >&2
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
