"""PyTorch side of `cargo xtask bench vit`: DINOv2 ViT-B/14-reg (transformers,
random weights) at 224 px on the CPU (or `--device cuda`, float32), same
batch sizes and repetitions. Prints lines shaped
like the Rust benchmark's."""

import argparse
import os
import resource
import time

import torch
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

p = argparse.ArgumentParser()
p.add_argument("--batch", default="1,16")
p.add_argument("--iters", type=int, default=3)
p.add_argument("--device", default="cpu")
p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
p.add_argument("--json", help="also write the last batch size's rate here ({\"images_per_s\": ...})")
args = p.parse_args()
dev = torch.device(args.device)
if args.threads:
    torch.set_num_threads(args.threads)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

torch.manual_seed(0)
model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
    image_size=518, patch_size=14, num_register_tokens=4)).eval().to(dev)
print(f"torch={torch.__version__} device={dev} threads={torch.get_num_threads()} cpus={os.cpu_count()}")
with torch.inference_mode():
    for b in [int(x) for x in args.batch.split(",")]:
        x = torch.randn(b, 3, 224, 224, device=dev)
        model(pixel_values=x)
        sync()
        start = time.perf_counter()
        for _ in range(args.iters):
            model(pixel_values=x)
        sync()
        secs = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rate = b * args.iters / secs
        print(f"torch batch={b} images_per_s={rate:.3f} peak_rss_mib={peak:.0f}")
if args.json:
    import json
    with open(args.json, "w") as f:
        json.dump({"batch": b, "images_per_s": rate, "torch": torch.__version__,
                   "threads": torch.get_num_threads()}, f)
