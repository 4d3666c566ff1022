# Sourced by the other scripts: make .venv and install meetq with its Redis driver (the
# `redis` extra) and its test tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import meetq, redis, hiredis, pytest_asyncio, fakeredis, lupa, mypy, ruff" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.meetq-installed ]; then
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet -e ".[redis,test,dev]"
    touch .venv/.meetq-installed
fi
