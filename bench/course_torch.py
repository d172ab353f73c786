#!/usr/bin/python3
"""The course's tasks in PyTorch on the CPU, the peer of kiln's examples in
bench/course.sh: the same architecture, data, batch size and one-cycle
recipe (fastai v1's: pct_start 0.3, div_factor 25, final_div 1e4, cosine
annealing, momentum / beta1 cycled 0.95 -> 0.85 -> 0.95, AdamW with betas
(0.9, 0.99), eps 1e-5, wd 1e-2 decoupled) as `kiln train`.

    /usr/bin/python3 bench/course_torch.py TASK [--epochs N] [--lr X] [--bs N]
        [--threads N] [--data DIR] [--opt adamw|sgd]

TASK (the kiln model it mirrors): cnn (examples/fashion_cnn.kiln),
resnet (examples/fashion_resnet.kiln) on Fashion-MNIST; multilabel, unet,
points (examples/multilabel.kiln, unet.kiln, points.kiln) on the folders
`kiln data make KIND DIR` writes (--data DIR). Prints one line per epoch:
time (training and validation), train and validation loss, metric.
"""
import argparse, gzip, os, sys, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("task")
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--bs", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
ap.add_argument("--opt", default="adamw")
ap.add_argument("--seed", type=int, default=42)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)


def fashion(d):
    def idx(name, off):
        with gzip.open(os.path.join(d, name)) as f:
            return np.frombuffer(f.read(), np.uint8, offset=off)
    x = idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255
    y = idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64)
    xv = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255
    yv = idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    m, s = x.mean(), x.std()
    return (torch.from_numpy((x - m) / s), torch.from_numpy(y),
            torch.from_numpy((xv - m) / s), torch.from_numpy(yv))


def accuracy(out, y):
    return (out.argmax(1) == y).float().sum().item()


def images(d, kind):
    """The layouts of `kiln data make` (see README): images/<name>.png,
    valid.txt, and labels.csv | labels/<name>_P.png + codes.txt | points.csv."""
    from PIL import Image
    valid = set(open(os.path.join(d, "valid.txt")).read().split())
    def load(name):
        return np.asarray(Image.open(os.path.join(d, "images", name + ".png")).convert("L"),
                          np.float32) / 255
    if kind == "multilabel":
        rows = [l.rstrip("\n").split(",", 1) for l in open(os.path.join(d, "labels.csv"))][1:]
        classes = sorted({t for _, tags in rows for t in tags.split()})
        names = [n for n, _ in rows]
        ys = np.zeros((len(rows), len(classes)), np.float32)
        for i, (_, tags) in enumerate(rows):
            for t in tags.split():
                ys[i, classes.index(t)] = 1
    elif kind == "points":
        rows = [l.strip().split(",") for l in open(os.path.join(d, "points.csv"))][1:]
        names = [r[0] for r in rows]
        ys = None
        pts = np.array([[float(r[1]), float(r[2])] for r in rows], np.float32)
    else:
        names = sorted(f[:-4] for f in os.listdir(os.path.join(d, "images")))
        ys = np.stack([np.asarray(Image.open(os.path.join(d, "labels", n + "_P.png")), np.int64)
                       for n in names])
    xs = np.stack([load(n) for n in names])[:, None]
    if kind == "points":  # pixel (x, y) -> (y, x) in [-1, 1], as kiln's loader (fastai's PointScaler)
        ys = pts[:, ::-1] / np.array([xs.shape[2], xs.shape[3]], np.float32) * 2 - 1
    v = np.array([n in valid for n in names])
    m, s = xs[~v].mean(), xs[~v].std()
    xs = (xs - m) / s
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    return t(xs[~v]), t(ys[~v]), t(xs[v]), t(ys[v])


def conv_bn_relu(ci, co, stride=1):
    return [nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU()]


class Residual(nn.Module):
    def __init__(self, ci, co, stride):
        super().__init__()
        self.a = nn.Sequential(*conv_bn_relu(ci, co, stride))
        self.b = nn.Sequential(nn.Conv2d(co, co, 3, 1, 1, bias=False), nn.BatchNorm2d(co))
        self.s = (nn.Sequential(nn.Conv2d(ci, co, 1, stride, bias=False), nn.BatchNorm2d(co))
                  if stride != 1 or ci != co else nn.Identity())
    def forward(self, x):
        return F.relu(self.b(self.a(x)) + self.s(x))


def double_conv(ci, co):
    return nn.Sequential(*conv_bn_relu(ci, co), *conv_bn_relu(co, co))


class UNet(nn.Module):
    def __init__(self, n=11):
        super().__init__()
        self.e1, self.e2, self.e3 = double_conv(1, 16), double_conv(16, 32), double_conv(32, 64)
        self.m = double_conv(64, 128)
        self.u3, self.d3 = nn.ConvTranspose2d(128, 64, 2, 2), double_conv(128, 64)
        self.u2, self.d2 = nn.ConvTranspose2d(64, 32, 2, 2), double_conv(64, 32)
        self.u1, self.d1 = nn.ConvTranspose2d(32, 16, 2, 2), double_conv(32, 16)
        self.out = nn.Conv2d(16, n, 1)
    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        m = self.m(F.max_pool2d(e3, 2))
        d = self.d3(torch.cat([self.u3(m), e3], 1))
        d = self.d2(torch.cat([self.u2(d), e2], 1))
        d = self.d1(torch.cat([self.u1(d), e1], 1))
        return self.out(d)


def fbeta(out, y, beta=2, thresh=0.2, eps=1e-9):  # fastai v1, averaged over samples
    p = (torch.sigmoid(out) > thresh).float()
    tp = (p * y).sum(1)
    prec, rec = tp / (p.sum(1) + eps), tp / (y.sum(1) + eps)
    b2 = beta * beta
    return ((1 + b2) * prec * rec / (prec * b2 + rec + eps)).sum().item()


class IoU:  # per-class intersection and union over the whole validation set
    def __init__(self, n=11):
        self.i, self.u = np.zeros(n), np.zeros(n)
    def __call__(self, out, y):
        p = out.argmax(1)
        for c in range(len(self.i)):
            self.i[c] += ((p == c) & (y == c)).sum().item()
            self.u[c] += ((p == c) | (y == c)).sum().item()
        return 0.0
    def value(self):
        m = self.u > 0
        return (self.i[m] / self.u[m]).mean()


if a.task == "cnn":
    # examples/fashion_cnn.kiln
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    x, y, xv, yv = fashion(a.data)
    loss_fn, metric, metric_name = F.cross_entropy, accuracy, "accuracy"
elif a.task == "resnet":
    model = nn.Sequential(*conv_bn_relu(1, 16), Residual(16, 16, 1), Residual(16, 32, 2),
                          Residual(32, 32, 1), Residual(32, 64, 2), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, 10))
    x, y, xv, yv = fashion(a.data)
    loss_fn, metric, metric_name = F.cross_entropy, accuracy, "accuracy"
elif a.task == "multilabel":
    model = nn.Sequential(*conv_bn_relu(1, 16), *conv_bn_relu(16, 32, 2), *conv_bn_relu(32, 32),
                          *conv_bn_relu(32, 64, 2), *conv_bn_relu(64, 64),
                          *conv_bn_relu(64, 128, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(128, 10))
    x, y, xv, yv = images(a.data, "multilabel")
    loss_fn, metric, metric_name = F.binary_cross_entropy_with_logits, fbeta, "fbeta"
elif a.task == "unet":
    model = UNet()
    x, y, xv, yv = images(a.data, "segmentation")
    loss_fn, metric, metric_name = F.cross_entropy, IoU(), "mean_iou"
elif a.task == "points":
    model = nn.Sequential(*conv_bn_relu(1, 16), *conv_bn_relu(16, 32, 2), *conv_bn_relu(32, 32),
                          *conv_bn_relu(32, 64, 2), *conv_bn_relu(64, 64),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, 128),
                          nn.ReLU(), nn.Linear(128, 2))
    x, y, xv, yv = images(a.data, "points")
    loss_fn, metric_name = F.mse_loss, "rmse"
    metric = lambda out, t: ((out - t) ** 2).sum().item() / t.shape[1]
else:
    sys.exit("unknown task %s (cnn, resnet, multilabel, unet, points)" % a.task)

steps = a.epochs * (len(x) // a.bs)
if a.opt == "sgd":
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=0)
else:
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.99), eps=1e-5,
                            weight_decay=1e-2)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.3,
                                            div_factor=25, final_div_factor=1e4,
                                            base_momentum=0.85, max_momentum=0.95)
print("torch %s, %d threads, task %s, %d epochs, bs %d, %s lr %g"
      % (torch.__version__, a.threads, a.task, a.epochs, a.bs, a.opt, a.lr), flush=True)
for epoch in range(a.epochs):
    t0 = time.perf_counter()
    model.train()
    perm = torch.randperm(len(x))
    tl = 0.0
    for i in range(len(x) // a.bs):
        b = perm[i * a.bs:(i + 1) * a.bs]
        loss = loss_fn(model(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        tl = 0.98 * tl + 0.02 * loss.item() if i else loss.item()
    model.eval()
    vl, mv = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(xv), a.bs):
            out = model(xv[i:i + a.bs])
            vl += loss_fn(out, yv[i:i + a.bs]).item() * len(out)
            mv += metric(out, yv[i:i + a.bs])
    t1 = time.perf_counter()
    mv = (metric.value() * len(xv) if isinstance(metric, IoU) else
          np.sqrt(mv / len(xv)) * len(xv) if a.task == "points" else mv)
    if isinstance(metric, IoU):
        metric = IoU()
    print("torch epoch %d: epoch time %.2f s, train_loss %.6f, valid_loss %.6f, %s %.4f"
          % (epoch, t1 - t0, tl, vl / len(xv), metric_name, mv / len(xv)), flush=True)
