#!/usr/bin/env bash
# The scaling_char_lm experiment: for 5 char_lm widths (about 7k to 117k non-embedding
# parameters), the 5 x 7 AdamW grid and the default policy, one epoch on 120k characters of
# pydoc text, then `lhopt scaling-fit experiment=scaling_char_lm`. Rerunning resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
LHOPT=${LHOPT:-.venv/bin/lhopt}
OUT=outputs/scaling_char_lm
SEEDS=${SEEDS:-[0]}
for width in 16 24 32 48 64; do
  "$LHOPT" evaluate tasks=[char_lm] "seeds=$SEEDS" extra_baselines=[] \
    "task_overrides=['task.d_model=$width','task.n_head=4','task.max_chars=120000']" \
    grid_dir=$OUT/grid run_dir=$OUT/policy_d$width
done
"$LHOPT" scaling-fit experiment=scaling_char_lm
