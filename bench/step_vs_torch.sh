#!/usr/bin/env bash
# One training step of the Fashion-MNIST MLP (784-512-512-10, flatten,
# cross-entropy, AdamW with fastai's defaults) on random data, kiln against
# PyTorch, at batch 128 and 32, on 2 threads; prints min and median per
# setting and the ratio kiln / PyTorch in samples per second.
#   bench/step_vs_torch.sh [BUILD_DIR] [REPEATS]
# kiln:    `kiln bench step examples/fashion_mlp.kiln --bs B --threads 2 --json`
#          (train_step of the generated C; the FMA peak is measured first).
# PyTorch: bench/step_torch.py (zero_grad, forward, backward, opt.step;
#          AdamW's multi-tensor form, its faster one here) in
#          its fastest setting on this machine, torch.set_num_threads(1) with
#          OPENBLAS_NUM_THREADS=2 in the environment before torch is imported
#          (the linear layers then run on OpenBLAS's own 2 threads), and, for
#          reference, the plain torch.set_num_threads(2) (OpenBLAS at its
#          default thread count). Debian's torch: /usr/bin/python3.
# Each side times REPEATS repeats (default 5) of 20 steps after a warm-up;
# min and median are over the repeats, in seconds per step.
set -euo pipefail
build=${1:-build}
reps=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
model="$root/examples/fashion_mlp.kiln"
kiln="$build/kiln"
[ -x "$kiln" ] || { echo "step_vs_torch.sh: no kiln binary at $kiln (build first, or pass BUILD_DIR)" >&2; exit 2; }
case "$reps" in '' | *[!0-9]* | 0) echo "step_vs_torch.sh: REPEATS must be a positive integer" >&2; exit 2 ;; esac
"$py" -c 'import torch' 2>/dev/null || { echo "step_vs_torch.sh: $py cannot import torch (apt-get install python3-torch)" >&2; exit 2; }
# PyTorch's matmuls go through the system BLAS: Debian's reference BLAS is
# ~7x slower than OpenBLAS, which is the fair peer (apt-get install
# libopenblas0-pthread switches libblas.so.3 to it).
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || true)
echo "PyTorch's BLAS: libblas.so.3 -> ${blas:-not found}"
case "$blas" in *openblas*) ;; *) echo "warning: libblas.so.3 is not OpenBLAS; install libopenblas0-pthread for a fair peer" >&2 ;; esac
echo "PyTorch $("$py" -c 'import torch; print(torch.__version__)'), kiln $kiln, $reps repeats of 20 steps"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
for bs in 128 32; do
  env -u OPENBLAS_NUM_THREADS -u OMP_NUM_THREADS \
    "$kiln" bench step "$model" --bs "$bs" --threads 2 --repeats "$reps" --json |
    sed "s/^{/{\"setting\":\"kiln\",/" >>"$out"
  OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=1 \
    "$py" "$root/bench/step_torch.py" --bs "$bs" --threads 1 --repeats "$reps" --json |
    sed "s/^{/{\"setting\":\"torch1\",/" >>"$out"
  env -u OPENBLAS_NUM_THREADS -u OMP_NUM_THREADS \
    "$py" "$root/bench/step_torch.py" --bs "$bs" --threads 2 --repeats "$reps" --json |
    sed "s/^{/{\"setting\":\"torch2\",/" >>"$out"
done

"$py" - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# kiln measures the FMA peak before each step benchmark: the best of them is
# the machine's (a lower one was disturbed by another process)
peaks = [r["gflops"] for r in rows if r["name"] == "peak"]
peak = max(peaks) if peaks else 0
if peak:
    print("FMA peak measured by kiln (2 threads): %.1f GFLOPS (best of %d)" % (peak, len(peaks)))
label = {
    "kiln": "kiln (generated C), 2 threads",
    "torch1": "PyTorch set_num_threads(1), OPENBLAS_NUM_THREADS=2",
    "torch2": "PyTorch set_num_threads(2)",
}
w = max(len(v) for v in label.values()) + len("ratio kiln / ")
for bs in (128, 32):
    got = {r["setting"]: r for r in rows if r.get("batch") == bs and r["name"] != "peak"}
    print()
    print("%-*s %14s %10s %12s %10s" % (w + 2, "batch %d" % bs, "samples/s best", "median",
                                         "ms/step min", "median"))
    for s in ("kiln", "torch1", "torch2"):
        r = got.get(s)
        if not r:
            print("  %-*s missing" % (w, label[s]))
            continue
        extra = ""
        if s == "kiln":
            extra = "   %.1f GFLOPS" % r["gflops"]
            if peak:
                extra += ", %.1f%% of the peak" % (100 * r["gflops"] / peak)
            extra += ", %d kernels" % r["kernels"]
        print("  %-*s %14.0f %10.0f %12.3f %10.3f%s" % (
            w, label[s], r["samples_per_s"], r["samples_per_s_median"],
            r["seconds_min"] * 1e3, r["seconds_median"] * 1e3, extra))
    k = got.get("kiln")
    for s in ("torch1", "torch2"):
        t = got.get(s)
        if k and t:
            print("  %-*s %14.2f %10.2f" % (
                w, "ratio kiln / " + label[s], k["samples_per_s"] / t["samples_per_s"],
                k["samples_per_s_median"] / t["samples_per_s_median"]))
EOF
