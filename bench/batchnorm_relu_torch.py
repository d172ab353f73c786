#!/usr/bin/python3
"""batchnorm + relu forward and backward in PyTorch on the CPU, the step
bench/batchnorm_relu.c times in kiln:

    y = relu(BatchNorm2d(C)(x));  (y * g).sum().backward()

x [N, C, H, W] requiring its gradient (--input: not), g fixed random data.
    batchnorm_relu_torch.py [N C H W] [--threads 2] [--steps 20] [--repeats 7] [--input]
Prints milliseconds per step, min and median over the repeats.
"""
import argparse
import statistics
import time

import torch
from torch import nn

ap = argparse.ArgumentParser()
ap.add_argument("shape", nargs="*", type=int, default=[64, 32, 28, 28])
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--repeats", type=int, default=7)
ap.add_argument("--input", action="store_true")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
n, c, h, w = a.shape
bn = nn.BatchNorm2d(c).train()
x = (torch.rand(n, c, h, w) * 4 - 2).requires_grad_(not a.input)
g = torch.rand(n, c, h, w) * 4 - 2


def step():
    bn.zero_grad(set_to_none=True)
    if x.grad is not None:
        x.grad = None
    (torch.relu(bn(x)) * g).sum().backward()


for _ in range(3):
    step()
times = []
for _ in range(a.repeats):
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    times.append((time.perf_counter() - t0) / a.steps * 1e3)
print("PyTorch %s batchnorm+relu %s x %s, %d threads: min %.3f ms, median %.3f ms per step"
      % (torch.__version__, a.shape, "input" if a.input else "requiring grad", a.threads,
         min(times), statistics.median(times)))
