#!/usr/bin/env bash
# The GPU checks of the scale issue (14.4) as one short script, so that a lent device's minutes go
# to measuring (~6-8 min on one H100/H200, most of it trial start-up):
#
#   bash benchmarks/gpu_checks.sh [OUT]      # results under OUT (default: $OUT, else ./gpu-checks)
#   GPU_CHECKS_CPU=1 bash benchmarks/gpu_checks.sh /tmp/g   # the same steps, tiny, on a CPU (a dry run)
#
# 1. bench_train.py --vit-b32: images/s and MFU of the training loop, ViT-B/32 at 224 px, bf16
#    (target >= 40% MFU);
# 2. a real sweep of 4 trials sharing the GPU (--gpus-per-trial 0.25, all four at once), logged to
#    MLflow (a sqlite file) and ingested into a store: 4 runs, each with US and DS metrics;
# 3. the TorchTrainer path on one GPU (--torch-trainer: Ray Train, one NCCL worker per trial).
#
# Each step writes its output to OUT/<step>.txt and prints one summary line; the script exits 1 if
# any step failed, after running the others. Needs the [train] extra.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-checks}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python}
ms=${META_STUDY:-meta-study}
failed=0

if [ "${GPU_CHECKS_CPU:-0}" = 1 ]; then
  bench=(--device cpu --batch 4 --steps 2 --peak-tflops 1)
  share=()                                    # no GPUs to share: the same sweep on CPUs
  trainer=(--torch-trainer --cpus-per-trial 1)
else
  bench=(--batch 256 --steps 50)
  share=(--gpus-per-trial 0.25)
  trainer=(--torch-trainer --gpus-per-trial 1)
fi

step() {  # step NAME TIMEOUT_S CMD...: run, keep its output, say how it went
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  [ "$rc" -eq 0 ] || failed=1
  echo "gpu-checks: $name: exit $rc in $((SECONDS - t0)) s ($out/$name.txt)"
  return "$rc"
}

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/device.txt" 2>&1
else
  echo "no nvidia-smi" >"$out/device.txt"
fi
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" >>"$out/device.txt" 2>&1
cat "$out/device.txt"

# 1. throughput and MFU
step vit_b32 300 "$py" benchmarks/bench_train.py --vit-b32 "${bench[@]}" && tail -4 "$out/vit_b32.txt"

# 2. four trials sharing one GPU, through MLflow into a store
tracking="sqlite:///$out/mlflow.db"
if step shared_sweep 420 "$py" sweeps/head_wd.py --smoke --num-samples 2 --max-concurrent 4 "${share[@]}" \
     --tracking-uri "$tracking" --experiment gpu-shared --storage-path "$out/ray" --name gpu-shared --address local \
     --quiet; then
  step shared_ingest 120 "$ms" ingest "$tracking" --experiment gpu-shared --store "$out/store" \
    && step shared_store 60 "$ms" store info "$out/store" && head -5 "$out/shared_store.txt"
fi

# 3. the TorchTrainer path on one GPU
step torch_trainer 420 "$py" sweeps/head_wd.py --smoke "${trainer[@]}" --tracking-uri "$tracking" \
  --experiment gpu-torchtrainer --storage-path "$out/ray" --name gpu-torchtrainer --address local --quiet \
  && grep -E '"(finished|errored)"' "$out/torch_trainer.txt"

exit "$failed"
