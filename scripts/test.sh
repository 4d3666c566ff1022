#!/usr/bin/env bash
# Set up, then run lint, types and the whole test suite against memory, fakeredis and a
# private redis-server and Redis Cluster the tests start themselves (redis-server and
# redis-cli are installed here when missing).
source "$(dirname "$0")/_setup.sh"
install_missing() {  # <binary> <Debian package>
    command -v "$1" >/dev/null 2>&1 && return
    echo "$1 not found; installing the Debian package $2" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
}
install_missing redis-server redis-server
# The Redis Cluster tests create their cluster with `redis-cli --cluster create`.
install_missing redis-cli redis-tools
echo "== ruff"; ruff check meetq tests bench examples
echo "== mypy --strict meetq"; mypy --strict meetq
echo "== pytest"; python -m pytest -q -p no:cacheprovider "$@"
