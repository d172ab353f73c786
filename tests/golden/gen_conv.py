#!/usr/bin/python3
"""Regenerates the PyTorch golden data for tests/test_conv.c.

    /usr/bin/python3 tests/golden/gen_conv.py [--out DIR]

For every case below, F.conv2d or F.conv_transpose2d on float32 inputs
from torch.manual_seed(k), and the gradients of sum(y * dy) for a random
dy: the files <case>.<t>.npy under tests/golden/conv/ with t one of

    x, w, b (when the case has a bias), dy   the inputs
    y                                        the op's output
    dx, dw, db (when the case has a bias)    the gradients

and cases.txt, one line per case:

    name op stride_h stride_w pad_h pad_w dil_h dil_w outpad_h outpad_w groups bias
"""
import argparse
import os
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    sys.exit("gen_conv.py: %s\nRun it with Debian's interpreter, which has python3-torch:\n"
             "/usr/bin/python3 tests/golden/gen_conv.py" % e)

HERE = os.path.dirname(os.path.abspath(__file__))

# name, op, x shape, w shape, stride, padding, dilation, output_padding, groups, bias
CASES = [
    ("basic", "conv2d", (2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), (0, 0), 1, True),
    ("stride2", "conv2d", (2, 3, 9, 7), (5, 3, 3, 3), (2, 2), (1, 1), (1, 1), (0, 0), 1, False),
    ("dilation", "conv2d", (1, 2, 10, 9), (3, 2, 3, 2), (1, 1), (2, 1), (2, 3), (0, 0), 1, True),
    ("groups", "conv2d", (2, 4, 6, 6), (6, 2, 3, 3), (1, 2), (1, 1), (1, 1), (0, 0), 2, True),
    ("depthwise4", "conv2d", (2, 4, 5, 5), (4, 1, 3, 3), (1, 1), (1, 1), (1, 1), (0, 0), 4, False),
    ("depthwise20", "conv2d", (1, 20, 5, 5), (20, 1, 3, 3), (1, 1), (1, 1), (1, 1), (0, 0), 20, True),
    ("pointwise", "conv2d", (2, 8, 5, 5), (6, 8, 1, 1), (1, 1), (0, 0), (1, 1), (0, 0), 1, True),
    ("odd", "conv2d", (3, 5, 7, 11), (7, 5, 4, 3), (3, 2), (2, 0), (1, 2), (0, 0), 1, True),
    ("t_basic", "conv_transpose2d", (2, 4, 5, 5), (4, 3, 3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1,
     True),
    ("t_groups", "conv_transpose2d", (2, 4, 4, 3), (4, 2, 2, 3), (2, 1), (0, 0), (1, 2), (0, 0), 2,
     True),
    ("t_odd", "conv_transpose2d", (1, 3, 3, 4), (3, 5, 4, 2), (3, 2), (1, 0), (1, 1), (2, 1), 1,
     False),
    ("t_up2", "conv_transpose2d", (2, 6, 4, 4), (6, 3, 2, 2), (2, 2), (0, 0), (1, 1), (0, 0), 1,
     True),
]


def save(out, name, t):
    np.save(os.path.join(out, name + ".npy"), t.detach().numpy().astype(np.float32))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "conv"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    lines = []
    for k, (name, op, xs, ws, st, pad, dil, opad, groups, bias) in enumerate(CASES):
        torch.manual_seed(k)
        x = torch.randn(*xs, requires_grad=True)
        w = (torch.rand(*ws) * 2 - 1).requires_grad_()
        b = (torch.rand(ws[0] if op == "conv2d" else ws[1] * groups) - 0.5).requires_grad_()
        if op == "conv2d":
            y = F.conv2d(x, w, b if bias else None, st, pad, dil, groups)
        else:
            y = F.conv_transpose2d(x, w, b if bias else None, st, pad, opad, groups, dil)
        dy = torch.randn(*y.shape)
        (y * dy).sum().backward()
        for t, v in (("x", x), ("w", w), ("dy", dy), ("y", y), ("dx", x.grad), ("dw", w.grad)):
            save(a.out, "%s.%s" % (name, t), v)
        if bias:
            save(a.out, name + ".b", b)
            save(a.out, name + ".db", b.grad)
        lines.append("%s %s %d %d %d %d %d %d %d %d %d %d" % (
            name, op, st[0], st[1], pad[0], pad[1], dil[0], dil[1], opad[0], opad[1], groups,
            int(bias)))
    with open(os.path.join(a.out, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
