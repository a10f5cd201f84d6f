#!/usr/bin/env bash
# Iterative alignment (RLAIF-V's recipe) on the demo's world: 3 rounds of generate -> mine -> DPO, each
# round from the last round's model, resumable like any pipeline. Run `halign demo` first (its world and
# SFT model are reused through --resume), then:
#   scripts/iterative_dpo.sh [RUN=runs/demo] [SEED=0]      (the demo's --out and --seed)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# `make demo` installs halign into .venv; use it when the venv is not activated
halign=$( [ -x "$root/.venv/bin/halign" ] && echo "$root/.venv/bin/halign" || echo halign )
exec "$halign" pipeline --config "$root/configs/demo/iterative.yaml" --out "${1:-runs/demo}" --seed "${2:-0}" --resume
