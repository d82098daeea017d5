#!/usr/bin/env bash
# Trains rl_v1_scratch from nothing in two stages (README, "The v1 agents"): 4.5M steps of
# MaskablePPO in 256 worlds, a quarter each of Burst-vec-v1, Day-vec-v1, DayLight-vec-v1 and
# Week-vec-v1, balanced reward with DayLight's counted three times, the endpoint network blind to
# the week's phase; then 3.0M steps more from its final model with a new seed. Each stage
# validates every 1.5M steps on 8 validation days of each task (fast fidelity) and keeps its best
# model; the agent is the second stage's. Validation plays in a worker process while training
# goes on (validation_workers=1), with the same figures and weights as in the training process.
#
#   bash scripts/train_rl_v1_scratch.sh [LOGS]    # default logs/rl_v1_scratch; prints each stage's minutes
#
# It ships nothing: the agent ends up at LOGS/stage2/maskable_ppo/Burst-vec-v1_1/best_model.zip,
# loadable as `evaluate.py policies=[ckpt:<that file>]`.
set -euo pipefail
cd "$(dirname "$0")/.."
LOGS=${1:-logs/rl_v1_scratch}
run() { echo "$LOGS/$1/maskable_ppo/Burst-vec-v1_1"; }
stage() {  # stage NAME OVERRIDES...: one train.py run into LOGS/NAME, timed
  local name=$1 start=$SECONDS
  shift
  python train.py algo=maskable_ppo env=sageserve_env/Burst-vec-v1 \
    'mix_envs=[sageserve_env/Day-vec-v1,sageserve_env/DayLight-vec-v1,sageserve_env/Week-vec-v1]' n_envs=256 \
    validation_seeds=[10000,10001,10002,10003,10004,10005,10006,10007] eval_freq=1500000 save_freq=500000 \
    hyperparams.batch_size=1024 'task_weights=[1,1,3,1]' torch_threads=1 validation_workers=1 progress_bar=false \
    'env_kwargs={max_delta:4,reward:balanced}' 'eval_env_kwargs={reward:balanced}' "$@" log_folder="$LOGS/$name"
  echo "stage $name: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
}

stage stage1 seed=5 n_timesteps=4500000 'hyperparams.policy_kwargs={hidden:32,week_phase:false}'
stage stage2 seed=6 n_timesteps=3000000 resume="$(run stage1)/model.zip"

echo "rl_v1_scratch: $(run stage2)/best_model.zip"
echo "total: $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s"
