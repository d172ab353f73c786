#!/usr/bin/env bash
# Epoch time of the Fashion-MNIST MLP (784-512-512-10, bs 64, one-cycle
# AdamW, 937 training steps + 10,000 validation samples), kiln against
# PyTorch, side by side in one run, repeated; prints min and median.
#   bench/mlp_epoch.sh [BUILD_DIR] [REPEATS]
# kiln has no thread pool yet (issue "Fast kernels"): it runs on one thread;
# PyTorch runs with 2 threads and with 1. kiln's time is the wall time of
# `kiln train --epochs 1` minus that of a 64-sample run (data loading and
# the cached compile), so both count training and validation only.
set -euo pipefail
build=${1:-build}
reps=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
model="$root/examples/fashion_mlp.kiln"
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
wall() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; sub "$(date +%s.%N)" "$s"; }
"$build/kiln" train "$model" --epochs 1 --limit 64 >/dev/null 2>&1   # warm the compile cache
k=() t2=() t1=()
for r in $(seq 1 "$reps"); do
  full=$(wall "$build/kiln" train "$model" --epochs 1 --lr 2e-3 --bs 64)
  base=$(wall "$build/kiln" train "$model" --epochs 1 --lr 2e-3 --bs 64 --limit 64)
  k+=("$(sub "$full" "$base")")
  t2+=("$(OMP_NUM_THREADS=2 "$py" "$root/bench/mlp_torch.py" 2 1 | sed 's/.*epoch time \([0-9.]*\) s.*/\1/')")
  t1+=("$(OMP_NUM_THREADS=1 "$py" "$root/bench/mlp_torch.py" 1 1 | sed 's/.*epoch time \([0-9.]*\) s.*/\1/')")
  echo "run $r: kiln 1 thread ${k[-1]} s   torch 2 threads ${t2[-1]} s   torch 1 thread ${t1[-1]} s"
done
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %.2f s, median %.2f s", a[1], a[int((NR+1)/2)]}'; }
echo "kiln (generated C, 1 thread): $(stats "${k[@]}")"
echo "PyTorch $($py -c 'import torch; print(torch.__version__)') (2 threads):  $(stats "${t2[@]}")"
echo "PyTorch (1 thread):           $(stats "${t1[@]}")"
