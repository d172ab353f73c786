#!/usr/bin/python3
"""Regenerates the PyTorch golden data for tests/test_metrics.c.

    /usr/bin/python3 tests/golden/gen_metrics.py [--out DIR]

Writes tiny .npy files into tests/golden/metrics/ (or DIR):

  fbeta_x.npy    f32 (6, 5)     multi-label logits, 6 samples x 5 tags
  fbeta_y.npy    f32 (6, 5)     their 0/1 targets (one sample has no tag)
  fbeta.npy      f32 ()         fastai v1's fbeta(x, y) with its defaults
                                (thresh 0.2, beta 2, eps 1e-9, sigmoid)
  fbeta_b1.npy   f32 ()         fbeta(x, y, thresh=0.5, beta=1)
  fbeta_nosig.npy f32 ()        fbeta(x, y, thresh=0.5, beta=2, sigmoid=False)
  acc_thresh.npy f32 ()         fastai v1's accuracy_thresh(x, y) (thresh 0.5)
  ce_x.npy       f32 (2, 4, 3, 5)  per-pixel logits N x C x H x W
  ce_y.npy       i64 (2, 3, 5)  labels, some 255 (ignored)
  ce_loss.npy    f32 ()         F.cross_entropy(x, y, ignore_index=255)
  ce_grad.npy    f32 (2, 4, 3, 5)  its gradient with respect to x

fastai v1's functions are written out below as fastai 1.0.61 defines them
(fastai/metrics.py), on torch tensors in float32. Inputs come from
numpy.random.RandomState(3), rounded to 3 decimals, so they print exactly.
"""
import argparse
import os
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    sys.exit(
        "gen_metrics.py: %s\n"
        "This script needs PyTorch and NumPy. Run it with Debian's interpreter, which has\n"
        "python3-torch: /usr/bin/python3 tests/golden/gen_metrics.py" % e
    )

HERE = os.path.dirname(os.path.abspath(__file__))


def fbeta(y_pred, y_true, thresh=0.2, beta=2, eps=1e-9, sigmoid=True):
    """fastai v1 (metrics.py): per-sample F-beta over the tags, averaged."""
    beta2 = beta ** 2
    if sigmoid:
        y_pred = y_pred.sigmoid()
    y_pred = (y_pred > thresh).float()
    y_true = y_true.float()
    TP = (y_pred * y_true).sum(dim=1)
    prec = TP / (y_pred.sum(dim=1) + eps)
    rec = TP / (y_true.sum(dim=1) + eps)
    res = (prec * rec) / (prec * beta2 + rec + eps) * (1 + beta2)
    return res.mean()


def accuracy_thresh(y_pred, y_true, thresh=0.5, sigmoid=True):
    """fastai v1 (metrics.py)."""
    if sigmoid:
        y_pred = y_pred.sigmoid()
    return ((y_pred > thresh) == y_true.byte()).float().mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "metrics"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    rs = np.random.RandomState(3)

    def save(name, a):
        np.save(os.path.join(args.out, name + ".npy"), a)

    # multi-label: 6 samples, 5 tags
    x = np.round(rs.uniform(-3, 3, size=(6, 5)), 3).astype(np.float32)
    y = (rs.uniform(0, 1, size=(6, 5)) < 0.4).astype(np.float32)
    y[4] = 0  # a sample with no tag: recall 0/eps = 0
    x[5] = -4.0  # a sample with no predicted tag at 0.2 (sigmoid(-4) = 0.018)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    save("fbeta_x", x)
    save("fbeta_y", y)
    save("fbeta", fbeta(tx, ty).numpy().astype(np.float32))
    save("fbeta_b1", fbeta(tx, ty, thresh=0.5, beta=1).numpy().astype(np.float32))
    save("fbeta_nosig", fbeta(tx, ty, thresh=0.5, sigmoid=False).numpy().astype(np.float32))
    save("acc_thresh", accuracy_thresh(tx, ty).numpy().astype(np.float32))

    # per-pixel cross-entropy with ignored pixels
    cx = np.round(rs.uniform(-3, 3, size=(2, 4, 3, 5)), 3).astype(np.float32)
    cy = rs.randint(0, 4, size=(2, 3, 5)).astype(np.int64)
    cy[0, 0, :2] = 255
    cy[1, 2, 4] = 255
    cy[1, 0, 0] = 255
    t = torch.from_numpy(cx).requires_grad_(True)
    loss = F.cross_entropy(t, torch.from_numpy(cy), ignore_index=255)
    loss.backward()
    save("ce_x", cx)
    save("ce_y", cy)
    save("ce_loss", loss.detach().numpy().astype(np.float32))
    save("ce_grad", t.grad.numpy().astype(np.float32))
    print("gen_metrics.py: wrote %s (torch %s, numpy %s)" % (args.out, torch.__version__,
                                                            np.__version__))


if __name__ == "__main__":
    main()
