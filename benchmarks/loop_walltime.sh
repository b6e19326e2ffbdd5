#!/usr/bin/env bash
# Wall time of a training run on this checkout against another checkout of pyro_lvm (e.g. a `git worktree` of an
# older commit), interleaved so that both see the same machine load:
#   bash benchmarks/loop_walltime.sh OTHER_TREE [ROUNDS]
# Prints, per run, the process's wall time and the loop's own time (the last metrics row's time_s) of
# `pyro-lvm train experiments/digits_vae.toml` (3,000 steps), one torch thread.
set -euo pipefail
other=$(cd "$1" && pwd); here=$(cd "$(dirname "$0")/.." && pwd); rounds=${2:-4}
out=$(mktemp -d)
for _ in $(seq "$rounds"); do
  for tree in "$other" "$here"; do
    rm -rf "$out/run"
    t0=$(date +%s.%N)
    PYTHONPATH=$tree OMP_NUM_THREADS=1 python -m pyro_lvm train "$tree/experiments/digits_vae.toml" \
      --set "train.out_dir=$out/run" --set train.progress=false > /dev/null
    t1=$(date +%s.%N)
    python - "$tree" "$t0" "$t1" "$out/run/metrics.json" <<'PY'
import json, sys
tree, t0, t1, metrics = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
loop = json.load(open(metrics))["history"][-1]["time_s"]
print(f"{tree}: wall {t1 - t0:.2f} s, loop {loop:.2f} s")
PY
  done
done
rm -rf "$out"
