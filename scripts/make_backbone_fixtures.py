"""Dev-time generator of the CLIP, SigLIP and DINOv3 parity fixtures (needs torch,
transformers >= 5, torchvision, PIL).

Builds small random-weight vision towers with the real geometry of the published
base models (224 px input, 16 px patches so a 14 x 14 grid, SigLIP without a CLS
token, DINOv3 with RoPE and 4 registers), saves them as Hugging Face folders with
the processor config each family's processor writes, and records what transformers
computes on the photo of tests/fixtures/vit (made by make_vit_fixture.py).

    python scripts/make_backbone_fixtures.py tests/fixtures/vit

Outputs, per family F in clip, siglip, dinov3 (a few hundred KB each):
  F/config.json, F/model.safetensors (f16), F/preprocessor_config.json
  F/expected.safetensors:
    pixel_values        [3, 224, 224]  the PIL processor on photo.png (DINOv3: its
                                       torchvision one, the only one it has)
    layer.{i}           [tokens, d]    the residual stream after block i (forward hooks)
    last_hidden_state   [tokens, d]    as the model returns it
    wide.last_hidden_state             on the top 160 rows (a 10 x 14 grid, so the
                                       position embeddings are resampled / RoPE rescaled)
"""

import json
import pathlib
import sys

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    CLIPImageProcessor,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    DINOv3ViTConfig,
    DINOv3ViTImageProcessor,
    DINOv3ViTModel,
    SiglipImageProcessor,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)

GEOMETRY = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                image_size=224, patch_size=16)


def randomize(model, gen):
    """Weights far from the identity (LayerScale, LayerNorm affine, biases), so a
    wrongly placed norm, scale or bias shows in every layer."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda1" in name:
                p.copy_(0.1 + torch.rand(p.shape, generator=gen))
            elif ("norm" in name or "layrnorm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "position" in name or "token" in name or "class_embedding" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))


def blocks(model):
    if isinstance(model, DINOv3ViTModel):
        return model.model.layer
    # transformers 5 holds the tower directly; 4.x under `vision_model`.
    return getattr(model, "vision_model", model).encoder.layers


def record(model, pixels, interpolate):
    """Block outputs through forward hooks (independent of how each model
    numbers its hidden_states) and the model's own last_hidden_state."""
    outs = []

    def hook(_module, _inputs, output):
        outs.append((output[0] if isinstance(output, tuple) else output)[0].clone())

    handles = [b.register_forward_hook(hook) for b in blocks(model)]
    kwargs = {"interpolate_pos_encoding": True} if interpolate else {}
    with torch.no_grad():
        last = model(pixel_values=pixels[None], **kwargs).last_hidden_state[0]
    for h in handles:
        h.remove()
    return outs, last


def build(out, name, model, processors, interpolate, photo, gen):
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    randomize(model, gen)
    # Stored as f16 to keep the fixture small; the reference is the saved
    # folder loaded back in f32 (not `model.float()`: `.half()` would also
    # have rounded DINOv3's RoPE frequency buffer).
    model.half().save_pretrained(folder, safe_serialization=True)
    model = type(model).from_pretrained(folder, dtype=torch.float32).eval()
    pil, tv = processors
    pil.save_pretrained(folder)
    pixels = pil(images=photo, return_tensors="pt")["pixel_values"][0]
    tensors = {"pixel_values": pixels}
    # How far transformers' default (torchvision) processor is from the PIL one
    # our pipeline follows; printed, not stored (docs/reference-facts.md has it).
    drift = (tv(images=photo, return_tensors="pt")["pixel_values"][0] - pixels).abs()
    print(f"{name}: torchvision vs PIL processor: max {drift.max():.4f}, mean {drift.mean():.5f}")
    layers, last = record(model, pixels, interpolate=False)
    for i, t in enumerate(layers):
        tensors[f"layer.{i}"] = t
    tensors["last_hidden_state"] = last
    _, wide = record(model, pixels[:, :160, :].contiguous(), interpolate)
    tensors["wide.last_hidden_state"] = wide
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, folder / "expected.safetensors")
    (folder / "README.md").write_text(
        f"Generated by scripts/make_backbone_fixtures.py with torch {torch.__version__} and "
        f"transformers {transformers.__version__}: a random-weight {type(model).__name__} "
        "(stored as f16) and what it computes on ../photo.png.\n"
    )
    return {k: list(v.shape) for k, v in tensors.items()}


def main(out):
    out = pathlib.Path(out)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(17)
    photo = Image.open(out / "photo.png").convert("RGB")
    shapes = {}
    shapes["clip"] = build(
        out, "clip",
        CLIPVisionModel(CLIPVisionConfig(hidden_act="quick_gelu", layer_norm_eps=1e-5, **GEOMETRY)),
        (CLIPImageProcessorPil(), CLIPImageProcessor()), True, photo, gen)
    shapes["siglip"] = build(
        out, "siglip",
        # The attention-pooling head is kept: a loader must skip what it does not read.
        SiglipVisionModel(SiglipVisionConfig(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, **GEOMETRY)),
        (SiglipImageProcessorPil(), SiglipImageProcessor()), True, photo, gen)
    shapes["dinov3"] = build(
        out, "dinov3",
        DINOv3ViTModel(DINOv3ViTConfig(num_register_tokens=4, rope_theta=100.0, layer_norm_eps=1e-5,
                                       **GEOMETRY)),
        # DINOv3 has only the torchvision processor (rescale, then resize in float).
        (DINOv3ViTImageProcessor(), DINOv3ViTImageProcessor()), False, photo, gen)
    print(json.dumps(shapes))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/vit")
