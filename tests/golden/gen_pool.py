#!/usr/bin/python3
"""Golden data for kiln's pooling, upsampling and padding ops (tests/test_pool.c).

For every case below it writes, into tests/golden/pool/ (or --out DIR):
    NAME.x.npy   the input (float32)
    NAME.y.npy   torch.nn.functional's output
    NAME.dy.npy  a gradient for the output (float32, normal)
    NAME.dx.npy  the input's gradient: autograd of sum(y * dy)
and cases.txt, one line per case: NAME OP ATTR... with the attributes as
kiln_op takes them ("kernel=[3,3]"), in the order of the cases.

Run with Debian's PyTorch: /usr/bin/python3 tests/golden/gen_pool.py
(torch 1.13, one thread, fixed seeds: the same build gives the same bytes).
"""
import argparse
import os
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    sys.exit("gen_pool.py needs PyTorch and NumPy (Debian's python3-torch under "
             "/usr/bin/python3): %s" % e)


def pair(v):
    return list(v) if isinstance(v, (list, tuple)) else [v, v]


def ints(v):
    return "[" + ",".join(str(i) for i in pair(v)) + "]"


CASES = []


def case(name, shape, op, attrs, fn, ties=False):
    CASES.append((name, shape, op, attrs, fn, ties))


def max_pool(name, shape, k, s=None, p=0, d=1, ceil=False, ties=False):
    s = k if s is None else s
    attrs = ["kernel=" + ints(k), "stride=" + ints(s), "padding=" + ints(p),
             "dilation=" + ints(d), "ceil_mode=%d" % ceil]
    case(name, shape, "max_pool2d", attrs,
         lambda x: F.max_pool2d(x, k, s, p, d, ceil_mode=ceil), ties)


def avg_pool(name, shape, k, s=None, p=0, ceil=False, inc=True):
    s = k if s is None else s
    attrs = ["kernel=" + ints(k), "stride=" + ints(s), "padding=" + ints(p),
             "ceil_mode=%d" % ceil, "count_include_pad=%d" % inc]
    case(name, shape, "avg_pool2d", attrs,
         lambda x: F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=inc))


def adaptive(name, shape, out):
    case(name, shape, "adaptive_avg_pool2d", ["output_size=" + ints(out)],
         lambda x: F.adaptive_avg_pool2d(x, out))


def upsample(name, shape, scale=None, size=None, mode="nearest", align=None):
    attrs = ["scale=%d" % scale] if scale else ["size=" + ints(size)]
    attrs.append("mode=%d" % (mode == "bilinear"))
    if align:
        attrs.append("align_corners=1")
    kw = {"scale_factor": scale} if scale else {"size": tuple(size)}
    if mode == "bilinear":
        kw["align_corners"] = bool(align)
    case(name, shape, "upsample", attrs, lambda x: F.interpolate(x, mode=mode, **kw))


def pad(name, shape, pads, value=0.0, reflect=False):
    attrs = ["pads=[" + ",".join(str(v) for v in pads) + "]", "mode=%d" % reflect]
    if value:
        attrs.append("value=%r" % value)
    if reflect:
        fn = lambda x: F.pad(x, tuple(pads), mode="reflect")
    else:
        fn = lambda x: F.pad(x, tuple(pads), value=value)
    case(name, shape, "pad", attrs, fn)


# max_pool2d: odd sizes, kernel > stride, padding, ceil_mode, dilation,
# rectangular windows, ties (PyTorch's first maximum), 1x1, a large window
max_pool("mp_k2_odd", [2, 3, 7, 7], 2)
max_pool("mp_k3s2p1", [2, 2, 9, 11], 3, 2, 1)
max_pool("mp_k3s2p1_ceil", [1, 3, 10, 9], 3, 2, 1, ceil=True)
max_pool("mp_dilation", [1, 2, 11, 12], 3, 1, 1, 2)
max_pool("mp_rect_ceil", [2, 2, 8, 13], (2, 3), (1, 2), (1, 0), ceil=True)
max_pool("mp_k3s1_ties", [1, 2, 6, 7], 3, 1, 1, ties=True)
max_pool("mp_k2_ties", [2, 2, 5, 9], 2, ties=True)
max_pool("mp_1x1", [3, 2, 1, 1], 1)
max_pool("mp_k9_loop", [1, 1, 17, 17], 9, 1, 4)
max_pool("mp_k3s2_wide", [1, 2, 5, 37], 3, 2, 0, ceil=True)
# avg_pool2d
avg_pool("ap_k2_odd", [2, 3, 7, 7], 2)
avg_pool("ap_k3s2p1_inc", [2, 2, 9, 11], 3, 2, 1)
avg_pool("ap_k3s2p1_exc", [2, 2, 9, 11], 3, 2, 1, inc=False)
avg_pool("ap_ceil_exc", [1, 3, 10, 9], 3, 2, 1, ceil=True, inc=False)
avg_pool("ap_ceil_inc", [1, 3, 10, 9], 3, 2, 1, ceil=True)
avg_pool("ap_rect_ceil", [2, 2, 8, 13], (2, 3), (1, 2), (1, 0), ceil=True)
avg_pool("ap_k9_loop", [1, 2, 17, 17], 9, 1, 4, inc=False)
# adaptive_avg_pool2d
adaptive("aap_global", [2, 3, 7, 7], [1, 1])
adaptive("aap_3x4", [2, 3, 7, 9], [3, 4])
adaptive("aap_up", [1, 2, 5, 5], [7, 8])
adaptive("aap_global_28", [1, 2, 28, 28], [1, 1])
adaptive("aap_divisible", [2, 2, 14, 14], [7, 7])
# upsample
upsample("up_nearest_2", [2, 3, 5, 7], scale=2)
upsample("up_nearest_3", [1, 2, 4, 5], scale=3)
upsample("up_nearest_size", [1, 2, 5, 7], size=[7, 5])
upsample("up_nearest_down", [1, 2, 7, 9], size=[3, 4])
upsample("up_nearest_size_29", [1, 1, 7, 3], size=[29, 10])
upsample("up_bilinear_2", [2, 3, 5, 7], scale=2, mode="bilinear")
upsample("up_bilinear_2_ac", [1, 2, 5, 7], scale=2, mode="bilinear", align=True)
upsample("up_bilinear_size", [1, 2, 5, 7], size=[11, 6], mode="bilinear")
upsample("up_bilinear_size_ac", [1, 2, 5, 7], size=[11, 6], mode="bilinear", align=True)
upsample("up_bilinear_down", [1, 2, 7, 9], size=[3, 4], mode="bilinear")
upsample("up_bilinear_down_ac", [1, 2, 7, 9], size=[3, 4], mode="bilinear", align=True)
upsample("up_bilinear_1x1", [1, 2, 1, 1], scale=2, mode="bilinear")
# pad
pad("pad_constant", [2, 3, 5, 7], [1, 1, 1, 1])
pad("pad_crop_value", [1, 2, 6, 7], [2, -1, 0, 3], value=1.5)
pad("pad_reflect", [1, 2, 6, 7], [3, 2, 1, 4], reflect=True)
pad("pad_reflect_1d", [2, 3, 5], [2, 3], reflect=True)
pad("pad_wide", [1, 1, 3, 4], [10, 9, 11, 12])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "pool"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    lines = []
    for i, (name, shape, op, attrs, fn, ties) in enumerate(CASES):
        g = torch.Generator().manual_seed(1000 + i)
        if ties:
            x = torch.randint(-2, 3, shape, generator=g).float()
        else:
            x = torch.randn(shape, generator=g)
        x.requires_grad_(True)
        y = fn(x)
        dy = torch.randn(y.shape, generator=g)
        (y * dy).sum().backward()
        for suffix, t in (("x", x), ("y", y), ("dy", dy), ("dx", x.grad)):
            np.save(os.path.join(args.out, "%s.%s.npy" % (name, suffix)),
                    t.detach().numpy().astype(np.float32))
        lines.append(" ".join([name, op] + attrs))
    with open(os.path.join(args.out, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d cases to %s" % (len(CASES), args.out))


if __name__ == "__main__":
    main()
