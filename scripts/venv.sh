#!/usr/bin/env bash
# Create (once) and reuse the project's virtual environment in .venv, then run a
# command inside it:  bash scripts/venv.sh probe-lab demo  |  bash scripts/venv.sh pytest
# torch is installed pinned first (a CPU build here); an unpinned torch would pull a
# multi-GB CUDA build. The install is redone only when pyproject.toml changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PROBE_LAB_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "probe-lab: creating a virtual environment in $venv" >&2
    "$python" -m venv "$venv"
fi
stamp="$venv/.probe-lab-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "probe-lab: installing dependencies into $venv (once)" >&2
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "torch==2.13.0"
    "$venv/bin/python" -m pip install -q -e "$root[extract,demo,dev]"
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
if [ "$#" -eq 0 ]; then
    exit 0
fi
exec "$@"
