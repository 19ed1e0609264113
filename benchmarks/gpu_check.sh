#!/usr/bin/env bash
# The GPU half of the training core on a lent device, in under 8 minutes (see gpu_check.py):
#   bash benchmarks/gpu_check.sh           # on the device machine: the 1B case, generation,
#                                          # and a small run on CPU and GPU compared
#   bash benchmarks/gpu_check.sh --smoke   # tiny shapes on CPU: checks that the script runs
# Needs only python with torch, transformers and peft (no shiftlab install, no network).
# With $OUT set (the device tool sets it), the figures also land in $OUT/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_WAIT_POLICY=PASSIVE
# A hard stop inside the device's 8-minute budget, so a hang still leaves time to report.
exec timeout 470 "$PYTHON" benchmarks/gpu_check.py "$@"
