#!/usr/bin/env bash
# Trains an agent for reactive's budget (docs/results.md, "Under reactive's budget") from the
# shipped rl_v1_scratch, in two stages: 3.0M steps with the GPU cost counted 30 times against
# balanced's miss weights (every task), then 3.0M steps more from that run's final model with
# each task's own weights (task_env_kwargs): on Burst and Day a miss is worth 1/200 of what
# balanced says against the GPU cost (VARIANT=A) or 1/100 (VARIANT=B), on DayLight 1/20 (A) or
# 1/15 (B), on Week 1/30. Validation (balanced reward, fast fidelity, 8 days a task) every 1.5M
# steps; the agent is the second stage's final model.
#
#   VARIANT=B bash scripts/train_rl_v1_budget.sh [LOGS]    # default logs/rl_v1_budget
set -euo pipefail
cd "$(dirname "$0")/.."
LOGS=${1:-logs/rl_v1_budget}
VARIANT=${VARIANT:-B}
case $VARIANT in
  A) hard="iw_slo_miss:0.075,niw_deadline_miss:0.015,drop:0.15"; light="iw_slo_miss:0.75,niw_deadline_miss:0.15,drop:1.5" ;;
  B) hard="iw_slo_miss:0.15,niw_deadline_miss:0.03,drop:0.3"; light="iw_slo_miss:1.0,niw_deadline_miss:0.2,drop:2.0" ;;
  *) echo "VARIANT must be A or B, got $VARIANT" >&2; exit 2 ;;
esac
run() { echo "$LOGS/$1/maskable_ppo/Burst-vec-v1_1"; }
stage() {  # stage NAME OVERRIDES...: one train.py run into LOGS/NAME, timed
  local name=$1 start=$SECONDS
  shift
  python train.py algo=maskable_ppo env=sageserve_env/Burst-vec-v1 \
    'mix_envs=[sageserve_env/Day-vec-v1,sageserve_env/DayLight-vec-v1,sageserve_env/Week-vec-v1]' n_envs=256 \
    validation_seeds=[10000,10001,10002,10003,10004,10005,10006,10007] eval_freq=1500000 save_freq=500000 \
    hyperparams.batch_size=1024 'task_weights=[1,1,3,1]' torch_threads=1 validation_workers=1 progress_bar=false \
    'eval_env_kwargs={reward:balanced}' n_timesteps=3000000 "$@" log_folder="$LOGS/$name"
  echo "stage $name: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
}

stage frugal seed=7 'env_kwargs={max_delta:4,reward:{cost:30}}' resume=agents/trained/rl_v1_scratch.zip
stage budget seed=8 'env_kwargs={max_delta:4,reward:balanced}' \
  "task_env_kwargs=[{reward:{cost:30,$hard}},{reward:{cost:30,$hard}},{reward:{cost:30,$light}},{reward:{cost:30}}]" \
  resume="$(run frugal)/model.zip"

echo "agent: $(run budget)/model.zip"
echo "total: $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s"
