#!/usr/bin/env bash
# GPU readiness in one command, on a CUDA machine (run from the repository root):
#
#     bash benchmarks/gpu_check.sh            # creates/uses .venv like `make test`
#
# 1. the step benchmark on cuda: every mode (fp32, bf16, fp16 x contiguous, channels_last), the
#    mode `auto` chooses with its probe cost, and torch.compile of the chosen mode;
# 2. a 200-iteration Ray Train run of the embedded default with ray.use_gpu: true (2 workers if
#    the machine has 2 GPUs), reporting img/s and peak GPU memory;
# 3. colorray colorize on cuda: a folder of 64-px images and one 12-MP photo;
# 4. a 2-trial sweep with tune.gpus_per_worker: 0.5 (one-worker trials, in their own processes,
#    two on one GPU), each trial's precision tags printed from its MLflow run.
# Target (issue 14): >= 5,000 img/s at 64 px on one H100-class GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || make venv
PY="$PWD/.venv/bin/python"
export MLFLOW_DISABLE_TELEMETRY=true RAY_USAGE_STATS_ENABLED=0 DVC_NO_ANALYTICS=1
OUT=${OUT:-$(mktemp -d)}
echo "== device"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
GPUS=$(nvidia-smi --list-gpus | wc -l)

echo "== 1. step benchmark on cuda (64 px; batch 32 and 256)"
for b in 32 256; do $PY benchmarks/train_step.py --device cuda --batch "$b" --iters 20; done
$PY - <<'EOF'
import time, torch
from colorray.config import parse_params
from colorray.precision import Precision
from colorray.train.step import GANTrainer
for batch in (32, 256):
    p = parse_params({"data": {"image_size": 64}, "train": {"batch_size": batch, "compile": True}})
    for amp, cl in (("bf16", True), ("fp16", True), ("none", False)):
        t = GANTrainer(p, "cuda", precision=Precision(amp, cl))
        L = torch.rand(batch, 1, 64, 64, device="cuda") * 2 - 1
        ab = torch.rand(batch, 2, 64, 64, device="cuda") * 0.6 - 0.3
        for _ in range(3):
            t.train_iteration([(L, ab)])  # compilation
        torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(50):
            t.train_iteration([(L, ab)])
        torch.cuda.synchronize(); dt = (time.perf_counter() - t0) / 50
        print(f"torch.compile {amp}/{'channels_last' if cl else 'contiguous'} batch {batch}: "
              f"{batch / dt:.0f} img/s, peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
EOF

echo "== 2. Ray Train, 200 iterations, ray.use_gpu: true, $([ "$GPUS" -ge 2 ] && echo 2 || echo 1) worker(s)"
PROJ="$OUT/project"; rm -rf "$PROJ"; mkdir -p "$PROJ"
$PY -m colorray.cli fetch --out "$PROJ/data/raw" --downloads "$PROJ/data/downloads" >/dev/null
$PY -m colorray.cli shard --raw "$PROJ/data/raw" --out "$PROJ/data/shards" >/dev/null
W=$([ "$GPUS" -ge 2 ] && echo 2 || echo 1)
$PY - "$PROJ" "$W" <<'EOF'
import sys, time, yaml
from pathlib import Path
root, workers = Path(sys.argv[1]), int(sys.argv[2])
raw = yaml.safe_load(open("params.yaml"))
raw["train"].update(iters=200, batch_size=256)
raw["ray"].update(use_gpu=True, num_workers=workers, cpus_per_worker=4, gpus_per_worker=1, report_every=50, eval_every=200)
(root / "params.yaml").write_text(yaml.safe_dump(raw))
EOF
(cd "$PROJ" && /usr/bin/time -v "$PY" -m colorray.cli train --params params.yaml --shards data/shards \
    --root . --models models --metrics metrics 2>&1 | tail -40)
$PY -c "import json,sys; m=json.load(open('$PROJ/metrics/train.json')); print('train img/s', m.get('img/s'), 'precision', m.get('precision'))"

echo "== 3. colorize on cuda"
$PY benchmarks/colorize.py --device cuda --out "$OUT/colorize"
nvidia-smi --query-gpu=memory.used --format=csv

echo "== 4. a sweep of one-worker trials sharing a GPU (tune.gpus_per_worker: 0.5)"
$PY - "$PROJ" <<'EOF'
import sys, yaml
from pathlib import Path
root = Path(sys.argv[1])
raw = yaml.safe_load((root / "params.yaml").read_text())
raw["tune"].update(num_samples=2, iters=40, report_every=20, grace_iters=20, max_concurrent_trials=2,
                   num_workers=1, cpus_per_worker=2, gpus_per_worker=0.5)
(root / "params.yaml").write_text(yaml.safe_dump(raw))
EOF
(cd "$PROJ" && "$PY" -m colorray.cli tune --params params.yaml --shards data/shards --root . --out tune 2>&1 \
    | grep -E "device|trials|Best" | tail -10)
$PY - "$PROJ" <<'EOF'
import sys
from mlflow import MlflowClient
client = MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow.db")
exp = client.get_experiment_by_name("colorray")
for run in client.search_runs([exp.experiment_id], filter_string="tags.`colorray.stage` = 'tune-trial'"):
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("colorray.precision.")}
    print(run.info.run_name, run.info.status, run.data.metrics.get("img/s"), tags)
EOF
