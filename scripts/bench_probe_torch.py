"""PyTorch side of the probe-sweep benchmark (`cargo run --release --example
bench_probe -- --python ...` runs it after the Rust side): seconds per epoch
of the reference's training loop (saev contrib/semseg/training.py: one
torch.nn.Linear per probe, one AdamW param group each, logits stacked, one
cross_entropy, backward, step) over synthetic cached activations with the
real shapes (f16 in memory, converted to f32 per batch), on the CPU.

    python scripts/bench_probe_torch.py --images 2048 --epochs 2 --threads 2
Prints lines shaped like the Rust benchmark's."""

import argparse
import resource
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--images", type=int, default=2048)
p.add_argument("--patches", type=int, default=256)
p.add_argument("--dim", type=int, default=768)
p.add_argument("--classes", type=int, default=151)
p.add_argument("--probes", type=int, default=18)
p.add_argument("--batch", type=int, default=1024, help="images per step")
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--threads", type=int, default=2)
p.add_argument(
    "--batched",
    action="store_true",
    help="one [P, d, C] weight and one bmm instead of the reference's ModuleList",
)
args = p.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
n, P, D, C = args.images, args.patches, args.dim, args.classes
acts = torch.randn(n, P, D).to(torch.float16)
labels = torch.randint(0, C, (n, P))
lrs = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
wds = [1e-1, 1e-3, 1e-5]
hp = [(lr, wd) for lr in lrs for wd in wds][: args.probes]

if args.batched:
    w = torch.nn.Parameter(torch.empty(len(hp), D, C).uniform_(-(D**-0.5), D**-0.5))
    b = torch.nn.Parameter(torch.empty(len(hp), 1, C).uniform_(-(D**-0.5), D**-0.5))
    # Per-probe lr/wd need per-probe tensors: views are not leaf params, so
    # this variant uses one group (the cost is what is measured).
    optim = torch.optim.AdamW([w, b], lr=1e-3, weight_decay=1e-3)

    def logits_fn(x):
        return torch.baddbmm(b, x.unsqueeze(0).expand(len(hp), -1, -1), w)
else:
    models = torch.nn.ModuleList([torch.nn.Linear(D, C) for _ in hp])
    groups = [
        {"params": m.parameters(), "lr": lr, "weight_decay": wd}
        for m, (lr, wd) in zip(models, hp)
    ]
    optim = torch.optim.AdamW(groups, lr=1e-4, weight_decay=1e-3)

    def logits_fn(x):
        return torch.stack([m(x) for m in models])

print(
    f"torch={torch.__version__} threads={torch.get_num_threads()} "
    f"variant={'batched' if args.batched else 'reference'}"
)
cpu_total = 0.0
for epoch in range(args.epochs):
    start = time.perf_counter()
    cpu_start = time.process_time()
    order = torch.randperm(n)
    for s in range(0, n, args.batch):
        idx = order[s : s + args.batch]
        x = acts[idx].float().reshape(-1, D)
        y = labels[idx].reshape(-1)
        logits = logits_fn(x)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, C), y.expand(len(hp), -1).reshape(-1)
        )
        loss.backward()
        optim.step()
        optim.zero_grad()
    secs = time.perf_counter() - start
    cpu_total += time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"torch epoch={epoch} seconds={secs:.2f} loss={loss.item():.4f} "
        f"peak_rss_mib={peak:.0f}"
    )
print(f"torch cpu_seconds_per_epoch={cpu_total / args.epochs:.2f}")
