"""Dev-time generator of the linear-probe fixtures (needs torch, safetensors).

    python scripts/make_probe_fixture.py tests/fixtures/probe

Outputs:
  adamw.safetensors   a sweep of 3 probes (d 8, C 5) trained exactly as saev's
                      contrib/semseg/training.py does it: one torch.nn.Linear per
                      probe, one AdamW param group per probe (its lr and weight
                      decay on weight AND bias), logits stacked, one
                      cross_entropy over all probes' patches, backward, step.
                      Tensors: init.weight [P, C, d], init.bias [P, C];
                      step{t}.x [n, d], step{t}.labels [n] (int64),
                      step{t}.weight [P, C, d], step{t}.bias [P, C] (after step t),
                      step{t}.loss [] (the joint loss before step t),
                      step{t}.probe_loss [P] (each probe's mean CE before step t),
                      step{t}.grad_weight [P, C, d], step{t}.grad_bias [P, C].
                      Metadata: lrs, wds (JSON), steps.
  reference/<lr_..__wd_..>/cfg.json, model_step{N}.pt
                      probe folders written by the reference's `dump` (a JSON
                      line, then torch.save(state_dict)), with two steps in the
                      first folder so "latest" matters; d 8, C 5.
  reference/expected.safetensors
                      x [n, 8] and the logits of each folder's latest model
                      (`logits.<folder>` [n, 5]).
  float_repr.json     [[bits of the f64 as a 16-hex-digit string, repr(x)], ...]
                      for Python's float repr (checkpoint folder names).
"""

import dataclasses
import json
import math
import os
import pathlib
import random
import struct
import sys

import torch
from safetensors.torch import save_file

N_CLASSES = 5
D = 8
LRS = [1e-2, 3e-3, 1e-3]
WDS = [1e-1, 1e-3, 1e-5]
STEPS = 6
IMAGES = 4
PATCHES = 4  # per image


def adamw_fixture(out: pathlib.Path):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    models = torch.nn.ModuleList(
        [torch.nn.Linear(D, N_CLASSES) for _ in LRS]
    )
    groups = [
        {"params": m.parameters(), "lr": lr, "weight_decay": wd}
        for m, lr, wd in zip(models, LRS, WDS)
    ]
    # Defaults as in the reference: betas (0.9, 0.999), eps 1e-8; the top-level
    # lr/wd are overridden by every group.
    optim = torch.optim.AdamW(groups, lr=1e-4, weight_decay=1e-3)

    tensors = {
        "init.weight": torch.stack([m.weight.detach().clone() for m in models]),
        "init.bias": torch.stack([m.bias.detach().clone() for m in models]),
    }
    # A class mean per label so the problem has signal; a few labels never
    # appear in some batches, which exercises the zero-count columns.
    means = torch.randn(N_CLASSES, D, generator=gen) * 2
    for t in range(1, STEPS + 1):
        labels = torch.randint(0, N_CLASSES, (IMAGES * PATCHES,), generator=gen)
        x = means[labels] + torch.randn(IMAGES * PATCHES, D, generator=gen)
        x_bwhd = x.view(IMAGES, 2, 2, D)
        labels_bwh = labels.view(IMAGES, 2, 2)
        labels_mbwh = labels_bwh.expand(len(models), -1, -1, -1)
        logits = torch.stack([m(x_bwhd) for m in models])
        loss = torch.nn.functional.cross_entropy(
            logits.view(-1, N_CLASSES), labels_mbwh.reshape(-1)
        )
        with torch.no_grad():
            probe_loss = torch.stack([
                torch.nn.functional.cross_entropy(
                    lg.reshape(-1, N_CLASSES), labels
                )
                for lg in logits
            ])
        loss.backward()
        tensors[f"step{t}.x"] = x.clone()
        tensors[f"step{t}.labels"] = labels.clone()
        tensors[f"step{t}.loss"] = loss.detach().clone()
        tensors[f"step{t}.probe_loss"] = probe_loss
        tensors[f"step{t}.grad_weight"] = torch.stack([m.weight.grad.clone() for m in models])
        tensors[f"step{t}.grad_bias"] = torch.stack([m.bias.grad.clone() for m in models])
        optim.step()
        optim.zero_grad()
        tensors[f"step{t}.weight"] = torch.stack([m.weight.detach().clone() for m in models])
        tensors[f"step{t}.bias"] = torch.stack([m.bias.detach().clone() for m in models])
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        out / "adamw.safetensors",
        metadata={"lrs": json.dumps(LRS), "wds": json.dumps(WDS), "steps": str(STEPS)},
    )


# --- the reference's config and dump, copied from contrib/semseg ---------------


@dataclasses.dataclass(frozen=True)
class Ade20kDataset:
    root: str = os.path.join(".", "data", "ade20k")
    split: str = "training"


@dataclasses.dataclass(frozen=True)
class Train:
    learning_rate: float = 1e-4
    weight_decay: float = 1e-3
    n_epochs: int = 400
    batch_size: int = 1024
    n_workers: int = 32
    imgs: Ade20kDataset = dataclasses.field(default_factory=Ade20kDataset)
    eval_every: int = 100
    device: str = "cuda"
    ckpt_path: str = os.path.join(".", "checkpoints", "contrib", "semseg")
    seed: int = 42
    log_to: str = os.path.join(".", "logs", "contrib", "semseg")


def dump(cfg: Train, model: torch.nn.Module, *, step: int | None = None):
    dpath = os.path.join(
        cfg.ckpt_path,
        f"lr_{cfg.learning_rate}__wd_{cfg.weight_decay}".replace(".", "_"),
    )
    os.makedirs(dpath, exist_ok=True)

    kwargs = dict(in_features=model.in_features, out_features=model.out_features)

    fname = "model"
    if step is not None:
        fname += f"_step{step}"

    fpath = os.path.join(dpath, f"{fname}.pt")
    with open(fpath, "wb") as fd:
        kwargs_str = json.dumps(kwargs)
        fd.write((kwargs_str + "\n").encode("utf-8"))
        torch.save(model.state_dict(), fd)

    fpath = os.path.join(dpath, "cfg.json")
    with open(fpath, "w") as fd:
        json.dump(dataclasses.asdict(cfg), fd)
    return dpath


def reference_fixture(out: pathlib.Path):
    root = out / "reference"
    # The folders' cfg.json record ckpt_path; keep it relative, as in the reference.
    cwd = os.getcwd()
    os.chdir(out)
    torch.manual_seed(1)
    x = torch.randn(7, D)
    expected = {"x": x}
    for i, (lr, wd, steps) in enumerate([(1e-3, 1e-1, [20, 100]), (3e-05, 1e-05, [8000])]):
        cfg = Train(learning_rate=lr, weight_decay=wd, ckpt_path="reference", seed=42 + i)
        for step in steps:
            model = torch.nn.Linear(D, N_CLASSES)
            dpath = dump(cfg, model, step=step)
        # The last dumped model is the latest step.
        name = os.path.basename(dpath)
        with torch.no_grad():
            expected[f"logits.{name}"] = model(x)
    os.chdir(cwd)
    save_file({k: v.contiguous() for k, v in expected.items()}, root / "expected.safetensors")


def float_repr_fixture(out: pathlib.Path):
    rng = random.Random(0)
    values = [
        3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1, 1e-5, 0.0, -0.0, 1.0, 2.5, 100.0,
        1e-4 * 3, 0.1 + 0.2, 1 / 3, 2 / 3, 1e-7, 1.5e-7, 123456789.0, 1e15, 1e16,
        9999999999999998.0, 1.234e16, 1e22, 1e100, 5e-324, 2.2250738585072014e-308,
        1.7976931348623157e308, 0.0001, 0.00011, 9.999e-5, 12345.678, -2.5e-6,
        -1e-3, 1e-10, 6.02214076e23, 123.0, 1e5, 0.5, 4.35, float(2**53), float(2**60),
    ]
    for _ in range(300):
        exp = rng.uniform(-12, 20)
        digits = rng.choice([1, 2, 3, 17])
        v = float(f"{rng.uniform(1, 10):.{digits - 1}f}e{int(exp)}")
        values.append(v if rng.random() < 0.9 else -v)
    for _ in range(100):
        values.append(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(62)))[0])
    values = [float(v) for v in values]
    rows = [
        [struct.pack(">d", v).hex(), repr(v)]
        for v in values
        if math.isfinite(v)
    ]
    (out / "float_repr.json").write_text(
        "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n"
    )


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/probe")
    out.mkdir(parents=True, exist_ok=True)
    adamw_fixture(out)
    reference_fixture(out)
    float_repr_fixture(out)
    (out / "README.md").write_text(
        f"Generated by scripts/make_probe_fixture.py with torch {torch.__version__}.\n"
    )


if __name__ == "__main__":
    main()
