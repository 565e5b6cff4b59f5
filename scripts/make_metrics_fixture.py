"""Reference outputs for sae-steer-metrics' segmentation code, from PyTorch.

Writes tests/fixtures/metrics/segmentation.safetensors with

- plain bilinear upsampling cases (`F.interpolate(mode="bilinear",
  align_corners=False)`), input and output in our patch-major layout
  `[h*w, channels]` / `[out_h*out_w, channels]`:
  `up_<name>.input`, `up_<name>.output` (F32), sizes in the metadata;
- three probe-like cases: logits `[151, 16, 16]` upsampled to 224x224 and
  argmaxed over all 151 outputs, as the reference's validation does:
  `<case>.logits` [256, 151] F16 (patch-major; the values are f16-exact, torch
  computed on their f32 promotion), `<case>.pred` [224, 224] U8 (torch
  argmax), `<case>.labels` [224, 224] U8 (synthetic ground truth);
  cases: `random` (normal logits), `ties` (integer logits in {0, 1, 2}, so
  exact ties between classes are common: torch.argmax keeps the first),
  `sparse` (classes above 100 never win);
- the validation scores over the three cases together, computed like the
  reference (one-hot, class-0 column dropped, label-0 pixels kept):
  `intersection`, `union` [150] I64, `iou` [150] F64 (NaN for an empty
  union), `acc` [1] F64 (percent over all pixels).

Run from the repository root: /work/pyenv/bin/python scripts/make_metrics_fixture.py
"""

import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

N_CLASSES = 151
OUT = "tests/fixtures/metrics/segmentation.safetensors"


def to_patch_major(chw: torch.Tensor) -> torch.Tensor:
    """[C, H, W] -> [H*W, C]."""
    c, h, w = chw.shape
    return chw.permute(1, 2, 0).reshape(h * w, c).contiguous()


def upsample(chw: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(chw[None], size=size, mode="bilinear", align_corners=False)[0]


def reference_scores(pred: torch.Tensor, truth: torch.Tensor):
    """Intersection and union per class 1..150 as the reference counts them."""
    pred_1h = F.one_hot(pred.long(), N_CLASSES)[..., 1:]
    true_1h = F.one_hot(truth.long(), N_CLASSES)[..., 1:]
    dims = tuple(range(pred_1h.ndim - 1))
    inter = torch.logical_and(pred_1h, true_1h).sum(dim=dims)
    union = torch.logical_or(pred_1h, true_1h).sum(dim=dims)
    return inter, union


def main():
    g = torch.Generator().manual_seed(20250206)
    tensors = {}
    meta = {"torch": torch.__version__}

    # Plain upsampling: up, up to a size that is no multiple, and down.
    for name, (c, h, w, oh, ow) in {
        "small": (3, 4, 5, 9, 13),
        "grid": (3, 16, 16, 56, 56),
        "down": (2, 16, 16, 7, 10),
    }.items():
        x = torch.randn(c, h, w, generator=g)
        tensors[f"up_{name}.input"] = to_patch_major(x)
        tensors[f"up_{name}.output"] = to_patch_major(upsample(x, (oh, ow)))
        meta[f"up_{name}"] = [c, h, w, oh, ow]

    preds, truths = [], []
    for case in ["random", "ties", "sparse"]:
        if case == "ties":
            logits = torch.randint(0, 3, (N_CLASSES, 16, 16), generator=g).float()
        else:
            logits = torch.randn(N_CLASSES, 16, 16, generator=g)
        # Classes above 140 never win anywhere, so they end up with an empty
        # union; in `sparse` classes above 100 never win.
        logits[141:] = -10.0
        if case == "sparse":
            logits[101:] = -10.0
        logits = logits.half().float()
        pred = upsample(logits, (224, 224)).argmax(dim=0).to(torch.uint8)

        truth = pred.clone()
        truth[:40] = 0  # unlabelled band: predictions there only add to unions
        noise = torch.rand(224, 224, generator=g) < 0.15
        truth[noise] = torch.randint(1, 141, (int(noise.sum()),), generator=g).to(torch.uint8)

        tensors[f"{case}.logits"] = to_patch_major(logits).half()
        tensors[f"{case}.pred"] = pred
        tensors[f"{case}.labels"] = truth
        preds.append(pred)
        truths.append(truth)

    pred = torch.stack(preds)
    truth = torch.stack(truths)
    inter, union = reference_scores(pred, truth)
    tensors["intersection"] = inter.to(torch.int64)
    tensors["union"] = union.to(torch.int64)
    tensors["iou"] = inter.double() / union.double()
    tensors["acc"] = ((pred == truth).double().mean() * 100).reshape(1)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(tensors, OUT, metadata={"sizes": json.dumps(meta)})
    empty = (union == 0).nonzero().flatten() + 1
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes); empty classes: {empty.tolist()}")
    print("acc", tensors["acc"].item(), "mIoU (non-empty)", tensors["iou"][union > 0].mean().item())


if __name__ == "__main__":
    main()
