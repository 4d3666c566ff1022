#!/usr/bin/env bash
# Set up and run the demo on the memory backend (no server needed).
source "$(dirname "$0")/_setup.sh"
python examples/demo.py
