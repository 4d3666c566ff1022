#!/usr/bin/env bash
# Set up, then run lint, types and the whole test suite against memory, fakeredis and a
# private redis-server the tests start themselves (installed here when missing).
source "$(dirname "$0")/_setup.sh"
if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server not found; installing the Debian package redis-server" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
echo "== ruff"; ruff check meetq tests bench examples
echo "== mypy --strict meetq"; mypy --strict meetq
echo "== pytest"; python -m pytest -q -p no:cacheprovider "$@"
