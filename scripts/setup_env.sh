#!/usr/bin/env bash
# Create .venv (if needed) and install obdb with the exact versions pinned in constraints.txt.
# Idempotent: a second call only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.obdb-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" wheel setuptools
# torch/torchvision first and alone: they are the big downloads, and pinning them here keeps any
# other package from pulling a different build.
"$VENV/bin/python" -m pip install --quiet -c constraints.txt torch torchvision
"$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[test]"
echo "$want" > "$stamp"
echo "obdb installed in $VENV"
