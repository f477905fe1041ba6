#!/usr/bin/env bash
# Makes (once) and reuses the recipe's Python environment, outside the checkout so every
# clone shares it: torch alone is a ~3 GB download. Prints the interpreter's path.
#   VLM_VENV   where the venv lives (default: ~/.cache/vlm-edge/venv)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VLM_VENV:-$HOME/.cache/vlm-edge/venv}"
req="$root/models/recipes/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up the recipe's Python environment in $venv (first time: a few GB)" >&2
  # In CI, no second copy of the wheels (torch's are GBs) in pip's cache.
  "$venv/bin/pip" install --quiet --disable-pip-version-check ${CI:+--no-cache-dir} -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
