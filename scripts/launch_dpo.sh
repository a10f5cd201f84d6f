#!/usr/bin/env bash
# DPO of a real checkpoint on N GPUs with DeepSpeed ZeRO, after a dry run that prints what trains and the
# memory per GPU. Usage:
#   scripts/launch_dpo.sh CONFIG PAIRS IMAGES_DIR OUT [NUM_GPUS=8] [ZERO=zero3]
#   scripts/launch_dpo.sh configs/qwen2-vl-7b/dpo.yaml runs/coco/pairs/pairs.jsonl data/coco/train2014 runs/coco/dpo 8
# Extra `--field value` overrides go in HALIGN_ARGS, e.g. HALIGN_ARGS="--learning_rate 5e-7".
set -euo pipefail
config=${1:?config YAML}; pairs=${2:?pairs JSONL}; images=${3:?images folder}; out=${4:?output folder}
gpus=${5:-8}; zero=${6:-zero3}
accel="configs/accelerate/${zero}.yaml"
# shellcheck disable=SC2086
halign dpo --config "$config" --dataset "$pairs" --images_dir "$images" --output_dir "$out" \
  --dry-run --accelerate_config "$accel" --num_gpus "$gpus" ${HALIGN_ARGS:-}
# shellcheck disable=SC2086
exec accelerate launch --config_file "$accel" --num_processes "$gpus" -m align dpo --config "$config" \
  --dataset "$pairs" --images_dir "$images" --output_dir "$out" ${HALIGN_ARGS:-}
