#!/usr/bin/env bash
# Epoch time of the Fashion-MNIST MLP (784-512-512-10, bs 64, one-cycle
# AdamW, 937 training steps + 10,000 validation samples), kiln against
# PyTorch, side by side in one run, repeated; prints min and median.
#   bench/mlp_epoch.sh [BUILD_DIR] [REPEATS]
# Both run with 2 threads and with 1. kiln's time is the wall time of
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
# PyTorch's matmuls go through the system BLAS: Debian's reference BLAS is
# ~7x slower than OpenBLAS, which is the fair peer (apt-get install
# libopenblas0-pthread switches libblas.so.3 to it).
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || true)
echo "PyTorch's BLAS: $blas"
case "$blas" in *openblas*) ;; *) echo "warning: not OpenBLAS; install libopenblas0-pthread for a fair peer" >&2 ;; esac
"$build/kiln" train "$model" --epochs 1 --limit 64 >/dev/null 2>&1   # warm the compile cache
kiln_epoch() {  # threads
  local full base
  full=$(wall "$build/kiln" train "$model" --epochs 1 --lr 2e-3 --bs 64 --threads "$1")
  base=$(wall "$build/kiln" train "$model" --epochs 1 --lr 2e-3 --bs 64 --threads "$1" --limit 64)
  sub "$full" "$base"
}
torch_epoch() {  # threads
  OMP_NUM_THREADS=$1 "$py" "$root/bench/mlp_torch.py" "$1" 1 | sed 's/.*epoch time \([0-9.]*\) s.*/\1/'
}
k2=() k1=() t2=() t1=()
for r in $(seq 1 "$reps"); do
  k2+=("$(kiln_epoch 2)"); t2+=("$(torch_epoch 2)")
  k1+=("$(kiln_epoch 1)"); t1+=("$(torch_epoch 1)")
  echo "run $r: 2 threads: kiln ${k2[-1]} s, torch ${t2[-1]} s   1 thread: kiln ${k1[-1]} s, torch ${t1[-1]} s"
done
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %6.2f s  median %6.2f s", a[1], a[int((NR+1)/2)]}'; }
echo "2 threads  kiln (generated C): $(stats "${k2[@]}")"
echo "2 threads  PyTorch $($py -c 'import torch; print(torch.__version__)'):  $(stats "${t2[@]}")"
echo "1 thread   kiln (generated C): $(stats "${k1[@]}")"
echo "1 thread   PyTorch:            $(stats "${t1[@]}")"
