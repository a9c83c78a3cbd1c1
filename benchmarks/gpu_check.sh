#!/usr/bin/env bash
# The one prepared GPU check (all steps are in benchmarks/gpu_check.py): logs and results.json in one folder.
# Usage: bash benchmarks/gpu_check.sh [--out DIR] [--only step,step]. Without a GPU it says so and exits 0.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$(command -v python || command -v python3)}"
exec "$python" "$here/gpu_check.py" "$@"
