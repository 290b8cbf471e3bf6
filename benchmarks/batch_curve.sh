#!/usr/bin/env bash
# Latency and throughput against batch size, eager and compiled, with energy per image where the device has a
# sensor: through run.py exactly as a user runs it, into one MLflow store (experiment batch-curve).
#   bash benchmarks/batch_curve.sh [extra Hydra overrides...]
# Defaults: resnet50 at 224x224, bf16, channels-last, batch 1/8/64/256 (issue 12's table), scenario latency
# (one sync per call) and throughput (back-to-back calls, one sync per window). Render it with:
#   python -m analysis.report --experiment batch-curve --format markdown
set -u
python=${PYTHON:-python}
"$python" run.py -m model=resnet50 input=224x224 precision=bf16 backend=pytorch,inductor \
  backend.channels_last=true input.batch_size=1,8,64,256 scenario=throughput,latency \
  tracking.experiment=batch-curve "$@"
