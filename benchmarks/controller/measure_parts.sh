#!/usr/bin/env bash
# The bundled policy at 3 seeds on both validation suites, with each part of the controller as
# it is and changed: the stall rule (start, runaway, off) and beta1 (free, held at 0.9).
# Resumable: a setting whose CSV exists is not scored again.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=benchmarks/controller
policy=${POLICY:-src/lhopt_cli/policies/default.pt}
tag=${TAG:-default}
run() {
  local name=$1; shift
  [ -s "$out/${tag}_$name.csv" ] && return 0
  OMP_NUM_THREADS=1 .venv/bin/python scripts/policy/select_policy.py "$policy" --suites validation_heldout validation \
    --seeds 0 1 2 --out "$out/${tag}_$name.csv.part" "$@" > "$out/${tag}_$name.txt"
  mv "$out/${tag}_$name.csv.part" "$out/${tag}_$name.csv"
}
run stall_start --stall-rule start
run stall_runaway --stall-rule runaway
run hold_beta1 --hold-beta1 --stall-rule start
run stall_off --stall-rule off
