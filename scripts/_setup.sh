# Sourced by the other scripts: make .venv and install meetq with its test tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import meetq, pytest_asyncio, fakeredis, lupa, mypy, ruff" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.meetq-installed ]; then
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet -e ".[test,dev]"
    touch .venv/.meetq-installed
fi
