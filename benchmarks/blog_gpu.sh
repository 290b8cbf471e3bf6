#!/usr/bin/env bash
# The blog's grids on one CUDA GPU, through run.py exactly as a user runs them, into one MLflow store.
#   bash benchmarks/blog_gpu.sh classification|segmentation [extra Hydra overrides...]
# Raw (eager fp32) and eager fp16; torch.compile fp32/fp16/bf16 without and with CUDA graphs;
# ONNX Runtime fp32 on the CPU execution provider as a comparison. Batch 1.
set -u
grid=${1:?classification or segmentation}; shift
case $grid in
  classification) models=resnet18,resnet34,resnet50; input=256x256 ;;
  segmentation) models=fcn_resnet50,fcn_resnet101,deeplabv3_resnet50,deeplabv3_resnet101; input=512x512 ;;
  *) echo "error: unknown grid '$grid' (classification or segmentation)" >&2; exit 2 ;;
esac
python=${PYTHON:-python}
failed=0
common=(-m "model=$models" "input=$input" "tracking.experiment=blog-gpu" "$@")
"$python" run.py "${common[@]}" backend=pytorch precision=fp32,fp16 || failed=$((failed + $?))
"$python" run.py "${common[@]}" backend=inductor precision=fp32,fp16,bf16 backend.cuda_graphs=false,true || failed=$((failed + $?))
# On the CPU a segmentation call takes seconds: fewer iterations keep the comparison affordable.
"$python" run.py "${common[@]}" backend=onnxruntime device=cpu precision=fp32 timing.min_iters=10 timing.warmup_iters=2 || failed=$((failed + $?))
exit $((failed > 125 ? 125 : failed))
