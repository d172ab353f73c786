#!/usr/bin/python3
"""One training step of the Fashion-MNIST MLP in PyTorch on the CPU, timed the
way `kiln bench step` times kiln's train_step, for bench/step_vs_torch.sh.

The model is examples/fashion_mlp.kiln: flatten, 784-512-512-10 with ReLU,
cross-entropy; AdamW with fastai's defaults (lr 2e-3, betas 0.9/0.99, eps
1e-5, wd 1e-2), in its multi-tensor form (foreach=True: ~20% faster here than
the default per-parameter loop; --no-foreach for that). One step is
zero_grad(set_to_none) + forward + backward + opt.step() on a
fixed random batch (inputs U(-1, 1), labels in [0, 10)), as kiln's benchmark
feeds one random batch. After a warm-up of 3 steps, each of --repeats repeats
times --steps steps; the figures are seconds per step, min and median over
the repeats.

  step_torch.py [--bs 128] [--threads 1] [--steps 20] [--repeats 5] [--no-foreach] [--json]

--threads is torch.set_num_threads. PyTorch's linear layers call the system
BLAS (Debian: libblas.so.3, OpenBLAS with libopenblas0-pthread), whose own
threads follow OPENBLAS_NUM_THREADS, which must be in the environment before
torch is imported: step_vs_torch.sh sets it. --blas-threads N sets it here
instead (before the import).
"""
import argparse
import json
import os
import statistics
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--bs", type=int, default=128)
ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
ap.add_argument("--blas-threads", type=int, default=None,
                help="OPENBLAS_NUM_THREADS (set before importing torch)")
ap.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--no-foreach", action="store_true",
                help="AdamW's per-parameter loop instead of its multi-tensor form")
ap.add_argument("--json", action="store_true", help="one JSON object instead of a line of text")
args = ap.parse_args()
if min(args.bs, args.threads, args.steps, args.repeats) < 1:
    sys.exit("step_torch.py: --bs, --threads, --steps and --repeats must be positive")
if args.blas_threads is not None:
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)

import torch  # noqa: E402  (after OPENBLAS_NUM_THREADS)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(42)
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                      nn.Linear(512, 10))
opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.99), eps=1e-5,
                        weight_decay=1e-2, foreach=not args.no_foreach)
x = torch.rand(args.bs, 1, 28, 28) * 2 - 1
y = torch.randint(0, 10, (args.bs,))


def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


for _ in range(3):
    step()
times = []
for _ in range(args.repeats):
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    times.append((time.perf_counter() - t0) / args.steps)
tmin, tmed = min(times), statistics.median(times)
blas = os.environ.get("OPENBLAS_NUM_THREADS", "")
res = {
    "name": "torch_step",
    "shape": "mlp 784-512-512-10 bs %d" % args.bs,
    "threads": args.threads,
    "blas_threads": int(blas) if blas.isdigit() else None,
    "seconds_min": tmin,
    "seconds_median": tmed,
    "batch": args.bs,
    "ms_per_step": tmin * 1e3,
    "samples_per_s": args.bs / tmin,
    "samples_per_s_median": args.bs / tmed,
    "foreach": not args.no_foreach,
    "torch": torch.__version__,
}
if args.json:
    print(json.dumps(res))
else:
    print("torch %s, set_num_threads(%d), OPENBLAS_NUM_THREADS=%s, foreach=%s, bs %d: "
          "%.3f ms/step (median %.3f), %.0f samples/s"
          % (torch.__version__, args.threads, blas or "unset", not args.no_foreach, args.bs,
             tmin * 1e3, tmed * 1e3, args.bs / tmin))
