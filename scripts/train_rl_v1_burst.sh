#!/usr/bin/env bash
# Trains a Burst specialist (docs/results.md, "rl_v1_burst"): the shipped rl_v1_transfer trained
# 1.5M steps more on Burst-vec-v1 alone (256 worlds), blind to the queued IW tokens as it was,
# with a miss worth 1/1000 of balanced's against the GPU cost counted 30 times. Validation
# (balanced reward, fast fidelity, 8 Burst days) every 0.75M steps.
#
#   bash scripts/train_rl_v1_burst.sh [LOGS]    # default logs/rl_v1_burst
set -euo pipefail
cd "$(dirname "$0")/.."
LOGS=${1:-logs/rl_v1_burst}
python train.py algo=maskable_ppo env=sageserve_env/Burst-vec-v1 n_envs=256 \
  validation_seeds=[10000,10001,10002,10003,10004,10005,10006,10007] eval_freq=750000 save_freq=500000 \
  hyperparams.batch_size=1024 torch_threads=1 validation_workers=1 progress_bar=false \
  'eval_env_kwargs={reward:balanced}' n_timesteps=1500000 seed=11 \
  'env_kwargs={max_delta:4,reward:{cost:30,iw_slo_miss:0.015,niw_deadline_miss:0.003,drop:0.03}}' \
  'hidden_features=[queued.iw]' resume=agents/trained/rl_v1_transfer.zip log_folder="$LOGS"
echo "agent: $LOGS/maskable_ppo/Burst-vec-v1_1/model.zip"
echo "total: $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s"
