#!/usr/bin/env bash
# The one command a session runs on a lent device machine (docs/training.md, "GPU run"):
#   device run: command "bash bench/device_train.sh", carry [".device"], timeout_s 600
# Installs the carried wheels, unpacks the carried dataset, trains the gpu profile under
# Keras's JAX backend and writes the model and figures to $OUT. Arguments are passed on to
# `bench/device_train.py train` (e.g. --budget-minutes 5).
#
# Environment: OUT (results folder, set by the device tool), FER_DEVICE_PACK (default
# .device), FER_DEVICE_WORK (scratch, default /tmp/fer-device), FER_DEVICE_PYTHON (default
# python3), KERAS_BACKEND (default jax).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?set OUT to the folder the results go to}
pack=${FER_DEVICE_PACK:-.device}
work=${FER_DEVICE_WORK:-/tmp/fer-device}
python=${FER_DEVICE_PYTHON:-python3}
[ -f "$pack/fer2013.tar.gz" ] || { echo "no $pack/fer2013.tar.gz: run 'uv run python bench/device_train.py pack' first and carry $pack" >&2; exit 2; }
mkdir -p "$out" "$work"
if compgen -G "$pack/wheels/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" "$pack"/wheels/*.whl
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
rm -rf "$work/fer2013"
tar -xzf "$pack/fer2013.tar.gz" -C "$work"
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv || true
"$python" bench/device_train.py train --data "$work/fer2013" --out "$out" --work "$work" "$@" \
  2>&1 | tee "$out/train.log"
