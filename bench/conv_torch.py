#!/usr/bin/python3
"""The Fashion-MNIST CNN of bench/conv_vs_torch.sh in PyTorch on the CPU:
conv3x3(32)-relu-maxpool2-conv3x3(64)-relu-maxpool2-fc128-relu-fc10,
cross-entropy, AdamW with fastai's defaults (multi-tensor form), at batch 64
on a fixed random batch. Times one training step (zero_grad, forward,
backward, opt.step), then conv2 alone (Conv2d(32, 64, 3, padding=1) on
[64, 32, 14, 14]): forward, and forward + backward of x, w and b. After a
warm-up, each of --repeats repeats times 10 calls; min and median per call
over the repeats, in milliseconds.

  conv_torch.py [--threads 2] [--bs 64] [--repeats 7] [--json]
"""
import argparse
import json
import statistics
import time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--bs", type=int, default=64)
ap.add_argument("--repeats", type=int, default=7)
ap.add_argument("--json", action="store_true")
a = ap.parse_args()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(0)
m = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Flatten(), nn.Linear(64 * 49, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.AdamW(m.parameters(), lr=2e-3, betas=(0.9, 0.99), eps=1e-5,
                        weight_decay=1e-2, foreach=True)
x = torch.rand(a.bs, 1, 28, 28) * 2 - 1
y = torch.randint(0, 10, (a.bs,))


def step():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(m(x), y).backward()
    opt.step()


conv = nn.Conv2d(32, 64, 3, padding=1)
xc = torch.randn(a.bs, 32, 14, 14, requires_grad=True)
dy = torch.randn(a.bs, 64, 14, 14)


def fwd():
    with torch.no_grad():
        conv(xc)


def fwd_bwd():
    conv(xc).backward(dy)


def timed(fn):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        ts.append((time.perf_counter() - t0) / 10 * 1e3)
    return min(ts), statistics.median(ts)


res = {"threads": a.threads, "bs": a.bs}
for name, fn in (("step", step), ("conv2_fwd", fwd), ("conv2_fwd_bwd", fwd_bwd)):
    res[name + "_ms_min"], res[name + "_ms_median"] = timed(fn)
if a.json:
    print(json.dumps(res))
else:
    print("PyTorch %s, %d thread(s), batch %d: step %.2f ms (median %.2f), conv2 forward %.2f ms, "
          "forward+backward %.2f ms" % (torch.__version__, a.threads, a.bs, res["step_ms_min"],
                                        res["step_ms_median"], res["conv2_fwd_ms_min"],
                                        res["conv2_fwd_bwd_ms_min"]))
