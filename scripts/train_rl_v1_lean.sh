#!/usr/bin/env bash
# Trains rl_v1_lean from nothing in one command and one run (docs/results.md, "rl_v1_lean"): the
# aims of rl_v1_transfer (under reactive's spend in the detailed fidelity at a higher IW SLO) without
# the chain of shipped parents behind it. 9M steps of MaskablePPO in 256 worlds, a quarter each of
# Burst-vec-v1, Day-vec-v1, DayLight-vec-v1 and Week-vec-v1, each task's own reward weights from
# the first step: the GPU cost counted 30 times against balanced's and a miss worth 3% of
# balanced's on Burst, 15% on Day, 3 times on DayLight; on Week the GPU cost counted 10 times.
# DayLight's rewards count three times (task_weights); the endpoint network is blind to the week's
# phase and to the queued IW tokens (hidden_features=[queued.iw]; docs/fidelity.md, "Queued IW
# tokens at a decision"). Validation (balanced reward, fast fidelity, 8 days a task) every 1.5M
# steps in a worker process; the agent is the final model.
#
#   bash scripts/train_rl_v1_lean.sh [LOGS]    # default logs/rl_v1_lean; prints its minutes
set -euo pipefail
cd "$(dirname "$0")/.."
LOGS=${1:-logs/rl_v1_lean}
burst="cost:30,iw_slo_miss:0.03,niw_deadline_miss:0.006,drop:0.06"
day="cost:30,iw_slo_miss:0.15,niw_deadline_miss:0.03,drop:0.3"
light="cost:30,iw_slo_miss:3.0,niw_deadline_miss:0.6,drop:6.0"
week="cost:10"
python train.py algo=maskable_ppo env=sageserve_env/Burst-vec-v1 \
  'mix_envs=[sageserve_env/Day-vec-v1,sageserve_env/DayLight-vec-v1,sageserve_env/Week-vec-v1]' n_envs=256 \
  validation_seeds=[10000,10001,10002,10003,10004,10005,10006,10007] eval_freq=1500000 save_freq=500000 \
  hyperparams.batch_size=1024 'task_weights=[1,1,3,1]' torch_threads=1 validation_workers=1 progress_bar=false \
  'env_kwargs={max_delta:4,reward:balanced}' 'eval_env_kwargs={reward:balanced}' \
  "task_env_kwargs=[{reward:{$burst}},{reward:{$day}},{reward:{$light}},{reward:{$week}}]" \
  'hidden_features=[queued.iw]' 'hyperparams.policy_kwargs={hidden:32,week_phase:false}' \
  seed=5 n_timesteps=9000000 log_folder="$LOGS"
echo "rl_v1_lean: $LOGS/maskable_ppo/Burst-vec-v1_1/model.zip"
echo "total: $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s"
