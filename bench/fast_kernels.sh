#!/usr/bin/env bash
# The issue "Fast kernels" measurements, side by side in one run:
#   bench/fast_kernels.sh [BUILD_DIR] [REPEATS]
# FMA peak and triad bandwidth measured by kiln; sgemm against OpenBLAS at 1
# and 2 threads; a fused elementwise chain against the triad; the MLP's
# training step against PyTorch (bench/step_vs_torch.sh); compile times.
set -euo pipefail
build=${1:-build}
reps=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
kiln="$build/kiln"
echo "== machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== kiln bench peak / stream (1 and 2 threads)"
"$kiln" bench peak --threads 1 --repeats "$reps"
"$kiln" bench peak --threads 2 --repeats "$reps"
"$kiln" bench stream --threads 1 --repeats "$reps"
"$kiln" bench stream --threads 2 --repeats "$reps"
echo "== kiln bench gemm, 1 thread"
"$kiln" bench gemm --threads 1 --repeats "$reps" --no-ref
echo "== kiln bench gemm, 2 threads"
"$kiln" bench gemm --threads 2 --repeats "$reps" --no-ref
echo "== kiln bench eltwise (64 Mi floats), 2 threads"
"$kiln" bench eltwise --threads 2 --repeats "$reps"
echo "== compile time of the MLP's programs: cold (empty cache), then warm"
cache=$(mktemp -d)
XDG_CACHE_HOME=$cache "$kiln" bench step "$root/examples/fashion_mlp.kiln" --bs 128 --repeats 1 --steps 1 --no-ref | tail -1
XDG_CACHE_HOME=$cache "$kiln" bench step "$root/examples/fashion_mlp.kiln" --bs 128 --repeats 1 --steps 1 --no-ref | tail -1
rm -rf "$cache"
echo "== the MLP's training step against PyTorch"
"$root/bench/step_vs_torch.sh" "$build" "$reps"
