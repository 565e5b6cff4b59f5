"""Dev-time generator of the ADE20K label-pipeline fixture (needs numpy, pillow, torch).

The reference (saev contrib/semseg) resizes a label map to 256x256 with PIL
`Image.NEAREST`, center-crops 224x224 and labels each 14x14 patch with
`torch.mode` of its pixels. This script runs exactly those library calls on a
few label maps so the Rust pipeline can be checked against them.

    python scripts/make_label_fixture.py tests/fixtures/ade20k

Outputs:
  labels/<name>.png        8-bit grayscale label maps (the inputs), labels 0..=150:
                           blobs of classes, a noisy band and thin lines, so the
                           nearest-neighbour sampling and the mode both matter
  labels.safetensors       uint8 tensors per input <name>:
                             <name>.resized       [224, 224]  NEAREST to 256x256, crop 16..240
                             <name>.patch_labels  [16, 16]    torch.mode over each 14x14 patch
                             <name>.patch_purity  [16, 16]    pixels equal to that label (of 196)
                           and a tie case built to exercise torch.mode's tie rule:
                             ties.pixels          [224, 224]
                             ties.patch_labels    [16, 16]
                             ties.patch_purity    [16, 16]
                           metadata: names (comma-separated), versions
"""

import pathlib
import sys

import numpy as np
import PIL
import torch
from PIL import Image
from safetensors.numpy import save_file

RESIZE, CROP, PATCH = 256, 224, 14
# (width, height): odd sizes, a very wide one, one smaller than the crop.
SIZES = {
    "odd_500x375": (500, 375),
    "odd_683x512": (683, 512),
    "wide_1200x200": (1200, 200),
    "small_150x100": (150, 100),
}


def label_map(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Blobs of random classes over a background, a noisy band, 1-px lines."""
    out = np.full((h, w), rng.integers(1, 151), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(12):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.03, 0.3) * w, rng.uniform(0.03, 0.3) * h
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        out[inside] = rng.integers(0, 151)
    # A band of per-pixel noise over a few labels: many near-ties in the mode.
    y0 = rng.integers(0, max(1, h - h // 5))
    band = out[y0 : y0 + h // 5]
    band[...] = rng.choice(np.array([0, 5, 17, 150], dtype=np.uint8), size=band.shape)
    # 1-px lines: NEAREST keeps or drops them depending on the exact sampling.
    for _ in range(6):
        if rng.random() < 0.5:
            out[rng.integers(0, h), :] = rng.integers(0, 151)
        else:
            out[:, rng.integers(0, w)] = rng.integers(0, 151)
    return out


def reference_labels(img: Image.Image) -> np.ndarray:
    resized = img.resize((RESIZE, RESIZE), resample=Image.NEAREST)
    off = (RESIZE - CROP) // 2
    cropped = resized.crop((off, off, off + CROP, off + CROP))
    return np.asarray(cropped, dtype=np.uint8)


def reference_patches(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = torch.from_numpy(pixels.astype(np.int64))
    n = CROP // PATCH
    # [n, PATCH, n, PATCH] -> [n, n, PATCH*PATCH], patches row-major.
    patches = t.reshape(n, PATCH, n, PATCH).permute(0, 2, 1, 3).reshape(n, n, PATCH * PATCH)
    mode = torch.mode(patches, dim=-1).values
    purity = (patches == mode[..., None]).sum(-1)
    # The Rust side documents "ties go to the smallest label"; make sure that
    # is what torch.mode did here.
    for i in range(n):
        for j in range(n):
            counts = np.bincount(patches[i, j].numpy(), minlength=256)
            assert mode[i, j].item() == int(np.argmax(counts)), (i, j)
    return mode.numpy().astype(np.uint8), purity.numpy().astype(np.uint8)


def tie_pixels(rng: np.random.Generator) -> np.ndarray:
    """Patches split exactly between labels, in shuffled pixel order."""
    n = CROP // PATCH
    out = np.zeros((CROP, CROP), dtype=np.uint8)
    for i in range(n):
        for j in range(n):
            a, b, c = rng.choice(np.arange(151), size=3, replace=False)
            kind = (i * n + j) % 4
            if kind == 0:  # 98 / 98
                vals = [a] * 98 + [b] * 98
            elif kind == 1:  # 65 / 65 / 66: a unique winner
                vals = [a] * 65 + [b] * 65 + [c] * 66
            elif kind == 2:  # 3-way tie 60/60/60 plus 16 of a fourth
                vals = [a] * 60 + [b] * 60 + [c] * 60 + [(a + 1) % 151] * 16
            else:  # uniform patch
                vals = [a] * 196
            vals = np.array(vals, dtype=np.uint8)
            rng.shuffle(vals)
            out[i * PATCH : (i + 1) * PATCH, j * PATCH : (j + 1) * PATCH] = vals.reshape(
                PATCH, PATCH
            )
    return out


def main(out_dir: str) -> None:
    out = pathlib.Path(out_dir)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20250206)
    tensors = {}
    for name, (w, h) in SIZES.items():
        arr = label_map(rng, w, h)
        img = Image.fromarray(arr, mode="L")
        img.save(out / "labels" / f"{name}.png", optimize=True)
        # Re-read, as the Rust side will, to test the file and not the array.
        img = Image.open(out / "labels" / f"{name}.png")
        assert img.mode == "L" and img.size == (w, h)
        resized = reference_labels(img)
        labels, purity = reference_patches(resized)
        tensors[f"{name}.resized"] = resized
        tensors[f"{name}.patch_labels"] = labels
        tensors[f"{name}.patch_purity"] = purity
    ties = tie_pixels(rng)
    labels, purity = reference_patches(ties)
    tensors["ties.pixels"] = ties
    tensors["ties.patch_labels"] = labels
    tensors["ties.patch_purity"] = purity
    meta = {
        "names": ",".join(SIZES),
        "pillow": PIL.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    save_file(tensors, str(out / "labels.safetensors"), metadata=meta)
    print(f"wrote {out / 'labels.safetensors'} and {len(SIZES)} PNGs")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/ade20k")
