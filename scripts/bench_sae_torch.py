"""PyTorch side of `examples/bench_sae.rs`: a d_model x d_sae SAE with random
weights on the CPU. (a) encode + decode (saev schema-2 forward, f = act(x W_enc
+ b_enc)); (b) one saev training step: forward, MSE + L1 (or TopK + AuxK),
backward, parallel-gradient removal, Adam, decoder renormalisation.
Prints lines shaped like the Rust benchmark's."""

import argparse
import os
import resource
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--d-model", type=int, default=768)
p.add_argument("--d-sae", type=int, default=24576)
p.add_argument("--batch", type=int, default=4096)
p.add_argument("--train-batch", type=int, default=4096)
p.add_argument("--topk", type=int, default=None)
p.add_argument("--iters", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
d, s = args.d_model, args.d_sae
print(f"torch={torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()}")


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_params():
    w_enc = torch.nn.init.kaiming_uniform_(torch.empty(d, s))
    w_dec = torch.nn.init.kaiming_uniform_(torch.empty(s, d))
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    return [torch.nn.Parameter(t) for t in (w_enc, torch.zeros(s), w_dec, torch.zeros(d))]


def activate(h, k):
    if k is None:
        return torch.relu(h)
    vals, idx = torch.topk(h, k, dim=-1)
    return torch.zeros_like(h).scatter_(-1, idx, vals)


def bench(label, k, aux_runs):
    w_enc, b_enc, w_dec, b_dec = make_params()
    x = torch.randn(args.batch, d)
    with torch.inference_mode():
        def encdec():
            return activate(x @ w_enc + b_enc, k) @ w_dec + b_dec
        encdec()
        start = time.perf_counter()
        for _ in range(args.iters):
            encdec()
        secs = (time.perf_counter() - start) / args.iters
    print(f"torch {label} encode+decode batch={args.batch} patches_per_s={args.batch / secs:.0f} "
          f"peak_rss_mib={peak_mib():.0f}")

    params = [w_enc, b_enc, w_dec, b_dec]
    opt = torch.optim.Adam(params, lr=4e-4, betas=(0.9, 0.999), eps=1e-8)
    xt = torch.randn(args.train_batch, d)
    aux_k = d // 2

    def step(aux):
        h = xt @ w_enc + b_enc
        f = activate(h, k)
        x_hat = f @ w_dec + b_dec
        loss = ((x_hat - xt) ** 2).mean()
        if k is None:
            loss = loss + 4e-4 * f.abs().sum(dim=1).mean()
        elif aux:
            # AuxK with every latent dead, as in the Rust benchmark.
            f_aux = activate(h, aux_k)
            e_aux = f_aux @ w_dec
            loss = loss + ((e_aux - (xt - x_hat.detach())) ** 2).mean() / 32
        loss.backward()
        with torch.no_grad():
            par = (w_dec.grad * w_dec).sum(dim=1, keepdim=True)
            w_dec.grad -= par * w_dec
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            w_dec.div_(w_dec.norm(dim=1, keepdim=True))

    for name, aux in aux_runs:
        step(aux)
        start = time.perf_counter()
        for _ in range(args.iters):
            step(aux)
        secs = (time.perf_counter() - start) / args.iters
        print(f"torch {name} train_step batch={args.train_batch} steps_per_s={1 / secs:.4f} "
              f"rows_per_s={args.train_batch / secs:.0f} peak_rss_mib={peak_mib():.0f}")


bench("relu", None, [("relu", False)])
if args.topk is not None:
    label = f"topk{args.topk}"
    bench(label, args.topk, [(label, False), (f"{label}+auxk_all_dead", True)])
