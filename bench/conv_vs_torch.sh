#!/usr/bin/env bash
# The Fashion-MNIST CNN (conv3x3(32)-relu-maxpool2-conv3x3(64)-relu-maxpool2-
# fc128-relu-fc10, cross-entropy, AdamW) at batch 64 on 2 threads, kiln
# against PyTorch (bench/conv_torch.py), on random data:
#   bench/conv_vs_torch.sh [BUILD_DIR] [REPEATS]
# Prints kiln's FMA peak, its train_step (min and median per step), every
# kernel of the step timed alone (`kiln bench kernel`, min per call: the
# convolutions are the im2col, matmul, permute and col2im kernels), and
# PyTorch's step and its conv2 forward / forward+backward with 1 and 2
# threads. Another process on the machine shows as a median well above the
# minimum; compare minima taken at the same time.
set -euo pipefail
build=${1:-build}
reps=${2:-7}
root=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
kiln="$build/kiln"
[ -x "$kiln" ] || { echo "conv_vs_torch.sh: no kiln binary at $kiln (build first, or pass BUILD_DIR)" >&2; exit 2; }
case "$reps" in '' | *[!0-9]* | 0) echo "conv_vs_torch.sh: REPEATS must be a positive integer" >&2; exit 2 ;; esac
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
model="$dir/fashion_cnn.kiln"
cat >"$model" <<'EOF'
model fashion_cnn
input  x: f32[B, 1, 28, 28]
target y: i32[B]
h = max_pool2d(relu(conv2d(x, 32, kernel=3, padding=1)), kernel=2)
h = max_pool2d(relu(conv2d(h, 64, kernel=3, padding=1)), kernel=2)
h = relu(linear(flatten(h), 128))
out = linear(h, 10)
loss = cross_entropy(out, y)
metric accuracy(out, y)
EOF
"$kiln" bench peak --threads 2 --repeats "$reps" | tail -1
"$kiln" bench step "$model" --bs 64 --threads 2 --repeats "$reps" | tail -2
echo "kernels of train_step, each timed alone (min per call):"
"$kiln" bench kernel "$model" --bs 64 | awk '$2 == "train_step" {print $1, $4, $5}' |
  while read -r name op mflop; do
    t=$("$kiln" bench kernel "$model" "$name" --bs 64 --threads 2 --repeats "$reps" 2>/dev/null |
        grep -oE 'min [0-9.]+ us' | awk '{print $2}')
    printf "  %-24s %-16s %9s MFLOP %10s us\n" "$name" "$op" "$mflop" "${t:-?}"
  done
if "$py" -c 'import torch' 2>/dev/null; then
  for t in 1 2; do "$py" "$root/bench/conv_torch.py" --threads "$t" --repeats "$reps"; done
else
  echo "conv_vs_torch.sh: $py cannot import torch; PyTorch skipped" >&2
fi
