#!/usr/bin/env bash
# Rewrite deploy/constraints.txt from the project's virtualenv (after `make` installed it):
# every installed distribution pinned, except torch and its CUDA wheels (pinned per image) and
# the project itself.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  sed -n '/^#/p' deploy/constraints.txt
  .venv/bin/pip freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-|triton|perceiver-fusion)\b'
} > deploy/constraints.txt.new
mv deploy/constraints.txt.new deploy/constraints.txt
