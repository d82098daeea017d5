#!/usr/bin/env bash
# Trains the shipped v1 agents again, one after the other: rl_v1 (10M steps on Burst-vec-v1),
# rl_v1_mix (4M more, half Burst and half DayLight worlds, cost reward), rl_v1_mix3 (0.5M more,
# a third each of Burst, Day and DayLight worlds, balanced reward), rl_v1_mix4 (1M more, blind to
# the week's phase, a quarter each of Burst, Day, DayLight and Week worlds) and rl_v1_mix5 (0.5M
# more, DayLight's rewards x3). README, "The v1 agents", says why each stage and how its
# checkpoint was chosen; this script takes those.
#
#   bash scripts/train_v1_agents.sh [LOGS]      # default logs/v1_agents; prints each stage's minutes
#
# It ships nothing: the agents end up at LOGS/<stage>/maskable_ppo/Burst-vec-v1_1/ (see the last
# lines it prints), loadable as `evaluate.py policies=[ckpt:<that model>.zip]`.
set -euo pipefail
cd "$(dirname "$0")/.."
LOGS=${1:-logs/v1_agents}
V=[10000,10001,10002,10003,10004,10005,10006,10007,10008,10009,10010,10011,10012,10013,10014,10015]
run() { echo "$LOGS/$1/maskable_ppo/Burst-vec-v1_1"; }
stage() {  # stage NAME OVERRIDES...: one train.py run into LOGS/NAME, timed
  local name=$1 start=$SECONDS
  shift
  python train.py algo=maskable_ppo env=sageserve_env/Burst-vec-v1 validation_seeds=$V "$@" \
    log_folder="$LOGS/$name" progress_bar=false
  echo "stage $name: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
}

stage rl_v1_a seed=0 'env_kwargs={max_delta:4}' \
  eval_freq=500000 save_freq=500000 n_timesteps=1500000 torch_threads=1
stage rl_v1_b seed=0 'env_kwargs={max_delta:4}' \
  eval_freq=1000000 save_freq=1000000 n_timesteps=8500000 torch_threads=2 resume="$(run rl_v1_a)/model.zip"
# rl_v1 is that run's best model on the validation days (at 9.5M steps)
stage rl_v1_mix 'mix_envs=[sageserve_env/DayLight-vec-v1]' seed=1 \
  'env_kwargs={max_delta:4,reward:cost}' 'eval_env_kwargs={reward:balanced}' \
  eval_freq=500000 save_freq=1000000 n_timesteps=4000000 hyperparams.batch_size=1024 \
  resume="$(run rl_v1_b)/best_model.zip"
# rl_v1_mix is its checkpoint at 13.5M steps (chosen in the detailed fidelity)
stage rl_v1_mix3 'mix_envs=[sageserve_env/Day-vec-v1,sageserve_env/DayLight-vec-v1]' n_envs=255 seed=2 \
  'env_kwargs={max_delta:4,reward:balanced}' 'eval_env_kwargs={reward:balanced}' \
  eval_freq=500000 save_freq=500000 n_timesteps=500000 hyperparams.batch_size=1024 \
  resume="$(run rl_v1_mix)/checkpoints/rl_model_13508864_steps.zip"

stage rl_v1_mix4 'mix_envs=[sageserve_env/Day-vec-v1,sageserve_env/DayLight-vec-v1,sageserve_env/Week-vec-v1]' \
  n_envs=256 seed=3 'env_kwargs={max_delta:4,reward:balanced}' 'eval_env_kwargs={reward:balanced}' \
  eval_freq=500000 save_freq=500000 n_timesteps=1000000 hyperparams.batch_size=1024 \
  'hyperparams.policy_kwargs={week_phase:false}' torch_threads=2 resume="$(run rl_v1_mix3)/best_model.zip"

stage rl_v1_mix5 'mix_envs=[sageserve_env/Day-vec-v1,sageserve_env/DayLight-vec-v1,sageserve_env/Week-vec-v1]' \
  n_envs=256 seed=4 'env_kwargs={max_delta:4,reward:balanced}' 'eval_env_kwargs={reward:balanced}' \
  eval_freq=500000 save_freq=500000 n_timesteps=500000 hyperparams.batch_size=1024 'task_weights=[1,1,3,1]' \
  torch_threads=1 resume="$(run rl_v1_mix4)/best_model.zip"

echo "rl_v1:      $(run rl_v1_b)/best_model.zip"
echo "rl_v1_mix:  $(run rl_v1_mix)/checkpoints/rl_model_13508864_steps.zip"
echo "rl_v1_mix3: $(run rl_v1_mix3)/best_model.zip"
echo "rl_v1_mix4: $(run rl_v1_mix4)/best_model.zip"
echo "rl_v1_mix5: $(run rl_v1_mix5)/best_model.zip"
echo "total: $(( SECONDS / 60 )) min"
