#!/usr/bin/env python3
"""Hostile-input corpus for images, annotations and activation caches.

Writes tests/fixtures/hostile/{images,labels,cache}/ (run from anywhere):

    /tmp/baseline-py/bin/python scripts/make_hostile_images.py

Every file is small (a few KB at most): the hostile ones declare huge sizes in
their headers, they do not contain them. The integration tests of
sae-steer-vit (decode) and sae-steer-data (labels, cache) read them; each
case must be a clear error naming the file and the problem, never a panic.
The output is deterministic, so rerunning the script changes no committed
file. Needs Pillow; PNGs with oddities Pillow refuses to write are put
together chunk by chunk here.
"""

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "hostile"
PHOTO_JPG = FIXTURES / "vit" / "photo.jpg"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, bit_depth, color_type, raw_rows: bytes, plte=None, trns=None, iend=True):
    """A PNG from already-filtered scanlines (each row starts with its filter byte)."""
    out = b"\x89PNG\r\n\x1a\n"
    out += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    if plte is not None:
        out += chunk(b"PLTE", plte)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(raw_rows, 9))
    if iend:
        out += chunk(b"IEND", b"")
    return out


def zero_rows(row_bytes: int, height: int) -> bytes:
    return (b"\x00" + b"\x00" * row_bytes) * height


def bomb_png(width, height):
    """1-bit gray of zeros: compresses about 1000:1, so a huge declared image
    stays a few KB. zlib is fed row by row so the script never holds it all."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    out = b"\x89PNG\r\n\x1a\n"
    out += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    out += chunk(b"IDAT", data)
    out += chunk(b"IEND", b"")
    return out


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0/SOF2) declares another size."""
    data = bytearray(jpeg)
    at = 2
    while at < len(data):
        assert data[at] == 0xFF
        code = data[at + 1]
        length = struct.unpack(">H", data[at + 2 : at + 4])[0]
        if code in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, at + 5, height, width)
            return bytes(data)
        at += 2 + length
    raise ValueError("no SOF marker")


def jpeg_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **kw)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=False)
    return buf.getvalue()


def gradient(mode: str, size=(64, 48)) -> Image.Image:
    """A small smooth test picture (deterministic)."""
    w, h = size
    im = Image.new("RGB", size)
    im.putdata([((x * 255) // w, (y * 255) // h, ((x + y) * 3) % 256) for y in range(h) for x in range(w)])
    return im.convert(mode)


def write(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def images():
    d = OUT / "images"
    photo = PHOTO_JPG.read_bytes()
    small = gradient("RGB")
    small_jpg = jpeg_bytes(small, quality=90)

    # Size attacks: small files, huge declared sides.
    write(d / "strip_40000000x1.png", bomb_png(40_000_000, 1))  # the 4,937-byte PNG
    write(d / "wide_1000000x40.png", bomb_png(1_000_000, 40))
    write(d / "aspect_16000x100.png", bomb_png(16_000, 100))  # sides fine, aspect 160
    write(d / "bomb_20000x20000.png", bomb_png(20_000, 20_000))  # 400 MP in ~50 KB
    write(d / "bomb_12000x12000.png", bomb_png(12_000, 12_000))  # sides fine, 144 MP
    write(d / "huge_65000x65000.jpg", jpeg_with_size(small_jpg, 65_000, 65_000))
    write(d / "aspect_60000x8.jpg", jpeg_with_size(small_jpg, 60_000, 8))
    write(d / "zero_width.png", png(0, 10, 8, 0, b""))
    write(d / "zero_height.jpg", jpeg_with_size(small_jpg, 64, 0))

    # Truncation: PIL refuses both ("image file is truncated").
    write(d / "truncated_third.jpg", photo[: len(photo) // 3])
    write(d / "no_eoi.jpg", photo[:-2])
    write(d / "trailing_garbage.jpg", photo + b"\x00garbage after the end-of-image marker" * 4)
    full = png_bytes(small)
    write(d / "truncated_half.png", full[: len(full) // 2])
    for lossless in (False, True):
        buf = io.BytesIO()
        small.save(buf, "WEBP", lossless=lossless, quality=80)
        kind = "lossless" if lossless else "lossy"
        write(d / f"{kind}.webp", buf.getvalue())
        write(d / f"truncated_{kind}.webp", buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    # A JPEG whose APP1 (EXIF) carries a complete thumbnail, its own FF D9
    # included, then is cut: the thumbnail's end marker must not count.
    thumb = jpeg_bytes(gradient("RGB", (8, 8)), quality=50)
    app1 = b"Exif\x00\x00" + thumb
    exif_jpg = photo[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + photo[2:]
    write(d / "exif_thumb_truncated.jpg", exif_jpg[: len(exif_jpg) // 2])
    write(d / "exif_thumb.jpg", exif_jpg)

    # Colour oddities that must decode.
    write(d / "cmyk.jpg", jpeg_bytes(small.convert("CMYK"), quality=90))
    write(d / "gray.jpg", jpeg_bytes(small.convert("L"), quality=90))
    write(d / "progressive.jpg", jpeg_bytes(small, quality=90, progressive=True))
    rows16 = b"".join(
        b"\x00" + b"".join(struct.pack(">HHH", x * 1000, y * 1300, (x * y * 17) % 65536) for x in range(64))
        for y in range(48)
    )
    write(d / "rgb16.png", png(64, 48, 16, 2, rows16))
    gray16 = b"".join(b"\x00" + b"".join(struct.pack(">H", (x * 997 + y * 131) % 65536) for x in range(64)) for y in range(48))
    write(d / "gray16.png", png(64, 48, 16, 0, gray16))
    write(d / "gray_alpha.png", png_bytes(small.convert("LA")))
    write(d / "palette.png", png_bytes(small.convert("P", palette=Image.ADAPTIVE, colors=16)))
    write(d / "rgba.png", png_bytes(small.convert("RGBA")))

    # Palette oddities: an index past the palette, and no palette at all.
    plte4 = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])
    rows = b"".join(b"\x00" + bytes((x * 7 + y) % 256 for x in range(16)) for y in range(16))
    write(d / "palette_index_out_of_range.png", png(16, 16, 8, 3, rows, plte=plte4))
    write(d / "palette_missing_plte.png", png(16, 16, 8, 3, rows))

    # BMP and TIFF (image folders may hold them) decode; cut, they are errors.
    buf = io.BytesIO()
    small.save(buf, "BMP")
    write(d / "bitmap.bmp", buf.getvalue())
    write(d / "truncated_half.bmp", buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    small.save(buf, "TIFF", compression="tiff_lzw")
    write(d / "lzw.tif", buf.getvalue())
    write(d / "truncated_half.tif", buf.getvalue()[: len(buf.getvalue()) // 2])

    # Not an image at all, and a format we do not decode.
    write(d / "not_an_image.jpg", b"<html>this is not an image</html>\n")
    buf = io.BytesIO()
    small.save(buf, "GIF")
    write(d / "picture.gif", buf.getvalue())


def labels():
    """ADE20K annotations: 8-bit gray PNGs, 0 = unlabelled, 1..=150 classes."""
    d = OUT / "labels"
    w, h = 32, 24
    ok = bytes(((x // 8) + (y // 8) * 4) % 151 for y in range(h) for x in range(w))

    def gray8(values: bytes) -> bytes:
        return png(w, h, 8, 0, b"".join(b"\x00" + values[y * w : (y + 1) * w] for y in range(h)))

    write(d / "valid.png", gray8(ok))
    bad = bytearray(ok)
    bad[5 * w + 7] = 255  # x 7, y 5
    write(d / "value_255.png", gray8(bytes(bad)))
    bad = bytearray(ok)
    bad[h * w - 1] = 151  # the last pixel: x 31, y 23
    write(d / "value_151.png", gray8(bytes(bad)))
    write(d / "rgb.png", png_bytes(Image.frombytes("L", (w, h), ok).convert("RGB")))
    write(
        d / "gray16.png",
        png(w, h, 16, 0, b"".join(b"\x00" + b"".join(struct.pack(">H", v) for v in ok[y * w : (y + 1) * w]) for y in range(h))),
    )
    bad16 = [int(v) for v in ok]
    bad16[2 * w + 3] = 256  # x 3, y 2: 0 if read as a byte
    write(
        d / "gray16_value_256.png",
        png(w, h, 16, 0, b"".join(b"\x00" + b"".join(struct.pack(">H", v) for v in bad16[y * w : (y + 1) * w]) for y in range(h))),
    )
    plte = bytes(range(256)) * 3
    write(d / "palette_index_200.png", png(w, h, 8, 3, b"".join(b"\x00" + bytes([200 if (x, y) == (1, 1) else ok[y * w + x] for x in range(w)]) for y in range(h)), plte=plte[: 256 * 3]))
    full = gray8(ok)
    write(d / "truncated.png", full[: len(full) // 2])
    write(d / "bomb_20000x20000.png", bomb_png(20_000, 20_000))


def cache_manifest(rows=3):
    """The manifest of a tiny valid cache: a 2-block ViT of width 8 with
    14-pixel patches, crop 28 (2 x 2 patches), tap layer1 with every token
    (CLS + 4 patches), patch labels, one shard of `rows` images."""
    return {
        "format": "sae-steer-cache/1",
        "model": "fixture/tiny",
        "model_config": {
            "hidden_size": 8,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "layer_norm_eps": 1e-6,
            "image_size": 28,
            "patch_size": 14,
            "num_channels": 3,
            "qkv_bias": True,
            "num_register_tokens": 0,
            "pos_embed_resample": {"antialias": False, "offset": 0.0},
        },
        "preprocess": {
            "resize": 32,
            "crop": 28,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "images": {"count": rows, "fingerprint": "0" * 64},
        "taps": [{"name": "layer1", "layer": 1, "tokens": "all", "n_tokens": 5, "dim": 8, "dtype": "f32"}],
        "labels": "patch",
        "shard_images": 4,
        "shards": [{"file": "shard-00000.safetensors", "rows": rows, "first_image": 0, "bytes": 0}],
        "next_image": rows,
        "complete": True,
        "skipped": [],
    }


def cache_shard(rows=3, labels=None, image_index=None) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    tensors = {
        "layer1": np.arange(rows * 5 * 8, dtype=np.float32).reshape(rows, 5, 8) / 7,
        "image_index": np.array(image_index if image_index is not None else range(rows), dtype=np.uint32),
        "patch_labels": np.array(labels if labels is not None else [[(r + p) % 151 for p in range(4)] for r in range(rows)], dtype=np.uint8),
        "patch_purity": np.full((rows, 4), 196, dtype=np.uint8),
    }
    return save(tensors)


def cache():
    """Activation-cache folders: `valid/` opens; each other folder is one lie."""
    d = OUT / "cache"
    good_shard = cache_shard()

    def folder(name, manifest, shard=good_shard):
        write(d / name / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
        if shard is not None:
            # Recorded size, so a changed shard is noticed.
            write(d / name / "shard-00000.safetensors", shard)

    def with_size(m, shard=good_shard):
        m["shards"][0]["bytes"] = len(shard)
        return m

    folder("valid", with_size(cache_manifest()))
    m = with_size(cache_manifest())
    m["model_config"]["patch_size"] = 0
    folder("zero_patch_size", m)
    m = with_size(cache_manifest())
    m["preprocess"]["crop"] = 0
    folder("zero_crop", m)
    m = with_size(cache_manifest())
    m["taps"][0]["dim"] = 0
    folder("zero_dim", m)
    m = with_size(cache_manifest())
    m["shard_images"] = 0
    folder("zero_shard_size", m)
    m = with_size(cache_manifest())
    m["shards"][0]["file"] = "../valid/shard-00000.safetensors"
    folder("shard_outside", m, shard=None)
    m = with_size(cache_manifest())
    m["shards"][0]["file"] = "/etc/passwd"
    folder("shard_absolute", m, shard=None)
    m = with_size(cache_manifest())
    m["shards"][0]["rows"] = 2  # the file holds 3
    m["next_image"] = 3
    folder("rows_mismatch", m)
    m = with_size(cache_manifest())
    m["shards"][0]["rows"] = 2**64 - 1
    folder("rows_overflow", m)
    # Sizes whose product overflows: crop 4294967292 = 14 * 306783378 gives
    # 306783378^2 patches; x 8 values x 4 bytes x 4 images is past 2^64.
    m = with_size(cache_manifest())
    m["preprocess"]["resize"] = m["preprocess"]["crop"] = 14 * 306783378
    m["taps"][0]["n_tokens"] = 1 + 306783378**2
    folder("size_overflow", m)
    m = with_size(cache_manifest())
    m["images"]["count"] = m["next_image"] = 2**40
    m["shards"][0]["first_image"] = 2**40 - 3
    folder("too_many_images", m)
    bad = cache_shard(labels=[[0, 1, 2, 3], [4, 255, 6, 7], [8, 9, 10, 11]])
    folder("label_255", with_size(cache_manifest(), bad), shard=bad)
    bad = cache_shard(image_index=[0, 1, 7])
    folder("image_index_out_of_range", with_size(cache_manifest(), bad), shard=bad)
    folder("truncated_shard", with_size(cache_manifest()), shard=good_shard[: len(good_shard) // 2])
    write(d / "not_json" / "manifest.json", b'{"format": "sae-steer-cache/1", "shards": [')


def main():
    for sub in ("images", "labels", "cache"):
        shutil.rmtree(OUT / sub, ignore_errors=True)
    images()
    labels()
    cache()
    for sub in ("images", "labels", "cache"):
        files = sorted(f for f in (OUT / sub).rglob("*") if f.is_file())
        print(f"{sub}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
