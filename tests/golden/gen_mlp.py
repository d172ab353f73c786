#!/usr/bin/python3
"""Regenerates the PyTorch golden data for tests/test_golden.c.

    /usr/bin/python3 tests/golden/gen_mlp.py [--data DIR] [--out DIR]

The model is examples/fashion_mlp.kiln written in PyTorch: flatten ->
linear(784, 512) -> relu -> linear(512, 512) -> relu -> linear(512, 10) ->
cross_entropy, float32, weights from torch.manual_seed(0). The batch is the
first 16 Fashion-MNIST training images, scaled to [0, 1] and normalised with
mean 0.2860 and std 0.3530. See tests/golden/README.md for the files written.
"""
import argparse
import gzip
import os
import struct
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover
    sys.exit(
        "gen_mlp.py: %s\n"
        "This script needs PyTorch and NumPy. Run it with Debian's interpreter, which has\n"
        "python3-torch: /usr/bin/python3 tests/golden/gen_mlp.py\n"
        "(the python3 first on PATH may be another one without torch)." % e
    )

BATCH = 16
MEAN, STD = 0.2860, 0.3530
PARAMS = [
    "linear0.weight", "linear0.bias",
    "linear1.weight", "linear1.bias",
    "linear2.weight", "linear2.bias",
]
HERE = os.path.dirname(os.path.abspath(__file__))


def read_idx(path, magic, want_dims):
    """An idx file (gzip'd) as a uint8 array, its header checked."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        sys.exit("%s: too short for an idx file" % path)
    m, n = struct.unpack(">II", raw[:8])
    if m != magic:
        sys.exit("%s: bad idx magic %#x (expected %#x)" % (path, m, magic))
    ndims = magic & 0xFF
    if ndims != want_dims:
        sys.exit("%s: %d dimensions, expected %d" % (path, ndims, want_dims))
    dims = struct.unpack(">" + "I" * ndims, raw[4:4 + 4 * ndims])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndims)
    if body.size != int(np.prod(dims)):
        sys.exit("%s: %d data bytes, header says %s" % (path, body.size, dims))
    return body.reshape(dims)


def build_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )


def named_params(model):
    """The model's parameters under kiln's names, in PARAMS order."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    out = {}
    for i, lin in enumerate(linears):
        out["linear%d.weight" % i] = lin.weight
        out["linear%d.bias" % i] = lin.bias
    assert list(out) == PARAMS
    return out


def save(outdir, name, array, dtype):
    a = np.ascontiguousarray(np.asarray(array, dtype=dtype))
    np.save(os.path.join(outdir, name + ".npy"), a)
    return a


def train_two_steps(init_state, x, y, make_opt, dtype=torch.float32, steps=2):
    """Optimizer steps (two by default) from the initial weights; the losses before each."""
    model = build_model()
    model.load_state_dict(init_state)
    model.to(dtype)
    x = x.to(dtype)
    opt = make_opt(model.parameters())
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return named_params(model), np.array(losses, dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="folder with train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz")
    ap.add_argument("--out", default=HERE, help="where the .npy files go (default: %(default)s)")
    args = ap.parse_args()

    torch.set_num_threads(1)  # one summation order, as reproducible as torch gets
    images = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"), 0x803, 3)
    labels = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"), 0x801, 1)
    xb = ((images[:BATCH].astype(np.float64) / 255.0 - MEAN) / STD).astype(np.float32)
    xb = xb.reshape(BATCH, 1, 28, 28)
    yb = labels[:BATCH].astype(np.int32)

    os.makedirs(args.out, exist_ok=True)
    save(args.out, "x", xb, np.float32)
    save(args.out, "y", yb, np.int32)
    x = torch.from_numpy(xb)
    y = torch.from_numpy(yb).long()

    # The initial weights, the loss and the gradients.
    model = build_model()
    params = named_params(model)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, p in params.items():
        save(args.out, name, p.detach().numpy(), np.float32)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    save(args.out, "loss", loss.detach().numpy(), np.float32)
    for name, p in params.items():
        save(args.out, "grad." + name, p.grad.numpy(), np.float32)
    print("loss %.7f  labels %s" % (loss.item(), yb.tolist()))

    runs_adamw = lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.99), eps=1e-5,
                                              weight_decay=1e-2)
    runs = {
        "adamw": runs_adamw,
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
        "sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2,
                                                   nesterov=True),
    }
    # One AdamW step: checked at the strict tolerance (after one step PyTorch's
    # float32 answer is itself accurate to it; see test_golden.c).
    # lr 1e-3 (PyTorch's default) keeps the comparison well conditioned.
    one, _ = train_two_steps(init_state, x, y,
                             lambda ps: torch.optim.AdamW(ps, lr=1e-3, betas=(0.9, 0.99),
                                                          eps=1e-5, weight_decay=1e-2), steps=1)
    for name, p in one.items():
        save(args.out, "adamw1." + name, p.detach().numpy(), np.float32)
    for run, make_opt in runs.items():
        final, losses = train_two_steps(init_state, x, y, make_opt)
        for name, p in final.items():
            save(args.out, "%s2.%s" % (run, name), p.detach().numpy(), np.float32)
        save(args.out, run + "_losses", losses, np.float32)
        print("%-13s losses %s" % (run, " ".join("%.7f" % l for l in losses)))
        # How accurate is the float32 answer itself? The same run in float64
        # (not saved): test_golden.c's tolerances must cover this difference.
        final64, _ = train_two_steps(init_state, x, y, make_opt, torch.float64)
        worst = max(((final[n].detach().double() - final64[n].detach()).abs().max().item(), n)
                    for n in PARAMS)
        print("%-13s float32 vs float64 after 2 steps: max |diff| %.2e (%s)"
              % ("", worst[0], worst[1]))

    total = sum(os.path.getsize(os.path.join(args.out, f))
                for f in os.listdir(args.out) if f.endswith(".npy"))
    print("torch %s, numpy %s: wrote %.1f MB of .npy to %s"
          % (torch.__version__, np.__version__, total / 1e6, args.out))


if __name__ == "__main__":
    main()
