#!/usr/bin/python3
"""One epoch of the Fashion-MNIST MLP (784-512-512-10, bs 64, AdamW one-cycle)
in PyTorch on the CPU, for bench/mlp_epoch.sh to compare with kiln."""
import gzip, os, sys, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
torch.set_num_threads(threads)
d = "/usr/share/datasets/fashion-mnist"

def idx(name, off):
    with gzip.open(os.path.join(d, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=off)

x = idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype(np.float32) / 255
y = idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64)
xv = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype(np.float32) / 255
yv = idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
m, s = x.mean(), x.std()
x, xv = torch.from_numpy((x - m) / s), torch.from_numpy((xv - m) / s)
y, yv = torch.from_numpy(y), torch.from_numpy(yv)
torch.manual_seed(42)
model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
bs = 64
steps = epochs * (len(x) // bs)
opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=1e-2)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.3,
                                            div_factor=25, final_div_factor=1e4)
for epoch in range(epochs):
    t0 = time.perf_counter()
    perm = torch.randperm(len(x))
    for i in range(len(x) // bs):
        b = perm[i * bs:(i + 1) * bs]
        loss = F.cross_entropy(model(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        out = torch.cat([model(xv[i:i + bs]) for i in range(0, len(xv), bs)])
        acc = (out.argmax(1) == yv).float().mean().item()
    t1 = time.perf_counter()
    print("torch epoch %d: epoch time %.2f s (training and validation), accuracy %.4f"
          % (epoch, t1 - t0, acc))
