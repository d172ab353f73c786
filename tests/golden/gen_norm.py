#!/usr/bin/python3
"""Regenerates the PyTorch golden data for tests/test_norm.c (batchnorm).

    /usr/bin/python3 tests/golden/gen_norm.py [--out DIR]

Two cases, float32, torch 1.13 on the CPU:
  bn2d  BatchNorm2d(3) over x [4, 3, 5, 6];
  bn1d  BatchNorm1d(5) over x [8, 5].
Each with PyTorch's defaults (momentum 0.1, eps 1e-5), weight and bias drawn
uniform in [0.5, 1.5) and [-0.5, 0.5), and in training mode:
  step 1: y = bn(x1)                               (updates the running stats)
  step 2: y = bn(x2); (y * g).sum().backward()     (train-mode forward, gradients)
then in evaluation mode ye = bn(x1) (the running statistics). Written to
DIR/<case>.<name>.npy (DIR defaults to tests/golden/norm): x1, x2, g, weight,
bias (the inputs); y (step 2's output), dx (d loss / d x2), dweight, dbias;
running_mean, running_var, num_batches_tracked (after both steps); y_eval.
Inputs have a nonzero mean and a spread unlike 1, so normalising matters.
"""
import argparse
import os
import sys

try:
    import numpy as np
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover
    sys.exit("gen_norm.py: %s\nRun it with Debian's interpreter, which has python3-torch:\n"
             "/usr/bin/python3 tests/golden/gen_norm.py" % e)

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [("bn2d", nn.BatchNorm2d, (4, 3, 5, 6)), ("bn1d", nn.BatchNorm1d, (8, 5))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "norm"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    for name, cls, shape in CASES:
        c = shape[1]
        bn = cls(c)
        with torch.no_grad():
            bn.weight.copy_(torch.rand(c) + 0.5)
            bn.bias.copy_(torch.rand(c) - 0.5)
        x1 = (torch.randn(shape) * 2.0 + 1.5).float()
        x2 = (torch.randn(shape) * 0.5 - 0.75).float()
        g = torch.randn(shape).float()
        out = {"x1": x1, "x2": x2, "g": g, "weight": bn.weight.detach().clone(),
               "bias": bn.bias.detach().clone()}
        bn.train()
        with torch.no_grad():
            bn(x1)
        xg = x2.clone().requires_grad_(True)
        y = bn(xg)
        (y * g).sum().backward()
        out.update({"y": y.detach(), "dx": xg.grad, "dweight": bn.weight.grad,
                    "dbias": bn.bias.grad, "running_mean": bn.running_mean,
                    "running_var": bn.running_var,
                    "num_batches_tracked": bn.num_batches_tracked})
        bn.eval()
        with torch.no_grad():
            out["y_eval"] = bn(x1)
        for k, v in out.items():
            arr = v.detach().numpy()
            np.save(os.path.join(a.out, "%s.%s.npy" % (name, k)), arr)
    print("wrote %s" % a.out)


if __name__ == "__main__":
    main()
