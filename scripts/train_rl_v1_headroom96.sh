#!/usr/bin/env bash
# Trains rl_v1_headroom96 from random weights in one command (docs/results.md, "rl_v1_headroom96"):
# scripts/train_rl_v1_headroom.sh with the plan sized for 0.96 of the arrivals, a miss on Burst and
# Day at 1/20 of balanced's price against the GPU cost counted 30 times, and DayLight and Week at
# the score's prices (balanced's weights counted 30 and 10 times). The agent is the run's final
# model (agents/trained/rl_v1_headroom96.*).
#
#   bash scripts/train_rl_v1_headroom96.sh [LOGS]    # default logs/rl_v1_headroom96
set -euo pipefail
cd "$(dirname "$0")/.."
HEADROOM=0.96 PROD_MISS_DIVISOR=20 \
  LIGHT=cost:30,iw_slo_miss:15,niw_deadline_miss:3,drop:30 \
  WEEK=cost:10,iw_slo_miss:5,niw_deadline_miss:1,drop:10 \
  bash scripts/train_rl_v1_headroom.sh "${1:-logs/rl_v1_headroom96}"
