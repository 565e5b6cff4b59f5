"""Dev-time generator of the DINOv2 parity fixtures (needs torch, transformers, PIL, scikit-image).

Builds small random-weight DINOv2 models with the real geometry (patch 14, native
518 px so the 37x37 -> 16x16 position-embedding resampling runs, 4 registers,
non-trivial LayerScale and LayerNorm weights), preprocesses a real photo the way
the reference does (PIL), and records what Hugging Face transformers computes.

    python scripts/make_vit_fixture.py tests/fixtures/vit

Outputs (a few hundred KB each):
  reg/        config.json + model.safetensors   Dinov2WithRegistersModel
  reg_hub.pth                                   the same weights in torch-hub keys (fused qkv)
  plain/      config.json + model.safetensors   Dinov2Model (no registers, plain bicubic)
  photo.png, photo.jpg, cmyk.jpg                the photo (scikit-image's chelsea, CC0)
  expected.safetensors                          pixel values and activations
"""

import json
import pathlib
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def reference_pixels(path):
    """The reference pipeline: RGB, 256x256 BILINEAR, center crop 224, scale, normalise."""
    img = Image.open(path).convert("RGB").resize((256, 256), Image.BILINEAR)
    img = img.crop((16, 16, 240, 240))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda1" in name:
                p.copy_(0.1 + torch.rand(p.shape, generator=gen))
            elif ("norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "position_embeddings" in name or "token" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))


def to_hub_keys(sd, depth):
    """Hugging Face Dinov2WithRegisters keys -> torch-hub dinov2_vitb14_reg keys."""
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "register_tokens": sd["embeddings.register_tokens"],
        "mask_token": sd["embeddings.mask_token"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    for i in range(depth):
        h, b = f"encoder.layer.{i}.", f"blocks.{i}."
        att = h + "attention.attention."
        out[b + "attn.qkv.weight"] = torch.cat([sd[att + k + ".weight"] for k in ("query", "key", "value")])
        out[b + "attn.qkv.bias"] = torch.cat([sd[att + k + ".bias"] for k in ("query", "key", "value")])
        out[b + "attn.proj.weight"] = sd[h + "attention.output.dense.weight"]
        out[b + "attn.proj.bias"] = sd[h + "attention.output.dense.bias"]
        out[b + "ls1.gamma"] = sd[h + "layer_scale1.lambda1"]
        out[b + "ls2.gamma"] = sd[h + "layer_scale2.lambda1"]
        for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            for t in ("weight", "bias"):
                out[b + f"{n}.{t}"] = sd[h + f"{n}.{t}"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def main(out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)

    # The photo: a real JPEG, decoded and preprocessed by PIL as the reference does.
    from skimage import data as skdata

    # PNG for the resize/crop/normalise parity (no decoder in between), JPEG
    # to measure how far the JPEG decoders (libjpeg-turbo vs zune-jpeg) drift.
    Image.fromarray(skdata.chelsea()).save(out / "photo.png", optimize=True)
    Image.fromarray(skdata.chelsea()).save(out / "photo.jpg", quality=92)
    # A CMYK JPEG (print workflows make them); must decode to sensible RGB.
    Image.fromarray(skdata.chelsea()[::6, ::6]).convert("CMYK").save(out / "cmyk.jpg", quality=90)
    pixels = reference_pixels(out / "photo.png")
    jpeg_pixels = reference_pixels(out / "photo.jpg")

    # Heads are 64 wide as in every DINOv2: the torch-hub file stores no head count.
    geometry = dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=4,
                    image_size=518, patch_size=14, layer_norm_eps=1e-6, qkv_bias=True)
    reg = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **geometry)).eval()
    randomize(reg, gen)
    # Weights are stored as f16 to keep the fixture small (and to exercise f16
    # loading); the reference runs in f32 on the same rounded values.
    reg.half().save_pretrained(out / "reg", safe_serialization=True)
    reg.float()
    # Re-key the saved checkpoint (its keys are the public HF names).
    sd = load_file(out / "reg" / "model.safetensors")
    torch.save(to_hub_keys(sd, geometry["num_hidden_layers"]), out / "reg_hub.pth")

    plain = Dinov2Model(Dinov2Config(**{**geometry, "hidden_size": 64, "num_hidden_layers": 2})).eval()
    randomize(plain, gen)
    plain.save_pretrained(out / "plain", safe_serialization=True)

    # A non-square input (12 x 16 patches: the photo's top rows) exercises the
    # resampling per axis; the tests cut the same rows.
    wide = pixels[:, :168, :].contiguous()

    tensors = {"pixel_values": pixels, "pixel_values_jpeg": jpeg_pixels,
               "pixel_values_cmyk": reference_pixels(out / "cmyk.jpg")}
    with torch.no_grad():
        o = reg(pixel_values=pixels[None], output_hidden_states=True)
        for i in range(geometry["num_hidden_layers"]):
            tensors[f"reg.layer.{i}"] = o.hidden_states[i + 1][0]
        normed = o.last_hidden_state[0]
        tensors["reg.x_norm_clstoken"] = normed[0]
        tensors["reg.x_norm_patchtokens"] = normed[1 + 4:]
        tensors["reg.wide.last_hidden_state"] = reg(pixel_values=wide[None]).last_hidden_state[0]

        o = plain(pixel_values=pixels[None], output_hidden_states=True)
        for i in range(2):
            tensors[f"plain.layer.{i}"] = o.hidden_states[i + 1][0]
        tensors["plain.last_hidden_state"] = o.last_hidden_state[0]
        tensors["plain.wide.last_hidden_state"] = plain(pixel_values=wide[None]).last_hidden_state[0]

    save_file({k: v.contiguous().float() for k, v in tensors.items()}, out / "expected.safetensors")
    (out / "README.md").write_text(
        "Generated by scripts/make_vit_fixture.py with torch "
        f"{torch.__version__} and transformers {__import__('transformers').__version__}.\n"
        "Random weights (the registers model stored as f16); the photo is scikit-image's `chelsea` (CC0).\n"
    )
    print(json.dumps({k: list(v.shape) for k, v in tensors.items()}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/vit")
