#!/usr/bin/env bash
# Trains rl_v1_demand from random weights in one command (docs/results.md, "rl_v1_demand"):
# MaskablePPO with the shared endpoint network whose action adjusts the demand planner's change
# of every endpoint by -2..+2 instances (train.py demand_residual=true, agents/demand.py), 6M
# steps in 256 worlds, a quarter each of Burst, Day, DayLight and Week-vec-v1 (DayLight's rewards
# counted three times), blind to the week's phase and to the queued IW tokens. Each task trains on
# its own reward weights, a miss priced against the GPU cost at 1/300 of balanced's on Burst, 1/200
# on Day, 1/5 on DayLight and 1/10 on Week (configs/rewards.yaml: balanced prices an IW SLO miss at
# 0.5 USD, here 0.05, 0.075 and 3.0 against the GPU cost counted 30 times, and the cost counted 10
# times on Week).
# Validation (balanced reward, fast fidelity, 8 days a task) every 1.5M steps.
#
#   bash scripts/train_rl_v1_demand.sh [LOGS]    # default logs/rl_v1_demand
set -euo pipefail
cd "$(dirname "$0")/.."
LOGS=${1:-logs/rl_v1_demand}
burst="cost:30,iw_slo_miss:0.05,niw_deadline_miss:0.01,drop:0.1"
day="cost:30,iw_slo_miss:0.075,niw_deadline_miss:0.015,drop:0.15"
light="cost:30,iw_slo_miss:3.0,niw_deadline_miss:0.6,drop:6.0"
week="cost:10"
python train.py algo=maskable_ppo env=sageserve_env/Burst-vec-v1 \
  'mix_envs=[sageserve_env/Day-vec-v1,sageserve_env/DayLight-vec-v1,sageserve_env/Week-vec-v1]' n_envs=256 \
  validation_seeds=[10000,10001,10002,10003,10004,10005,10006,10007] eval_freq=1500000 save_freq=500000 \
  hyperparams.batch_size=1024 'task_weights=[1,1,3,1]' torch_threads=1 validation_workers=1 progress_bar=false \
  'env_kwargs={max_delta:4,reward:balanced}' 'eval_env_kwargs={reward:balanced}' 'hidden_features=[queued.iw]' \
  'hyperparams.policy_kwargs={hidden:32,week_phase:false}' demand_residual=true \
  "task_env_kwargs=[{reward:{$burst}},{reward:{$day}},{reward:{$light}},{reward:{$week}}]" \
  seed=13 n_timesteps=6000000 log_folder="$LOGS"
echo "agent: $LOGS/maskable_ppo/Burst-vec-v1_1/model.zip"
echo "total: $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s"
