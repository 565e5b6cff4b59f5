#!/usr/bin/env python3
"""Hostile-input corpus for images, annotations and activation caches.

Writes tests/fixtures/hostile/{images,labels,cache}/ (run from anywhere):

    /tmp/baseline-py/bin/python scripts/make_hostile_images.py

Every file is small (a few KB at most): the hostile ones declare huge sizes in
their headers, they do not contain them. The integration tests of
sae-steer-vit (decode) and sae-steer-ade20k (labels, cache) read them; each
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

    # Not an image at all, and a format we do not decode.
    write(d / "not_an_image.jpg", b"<html>this is not an image</html>\n")
    buf = io.BytesIO()
    small.save(buf, "BMP")
    write(d / "bitmap.bmp", buf.getvalue())


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
    full = gray8(ok)
    write(d / "truncated.png", full[: len(full) // 2])
    write(d / "bomb_20000x20000.png", bomb_png(20_000, 20_000))


def main():
    for sub in ("images", "labels"):
        shutil.rmtree(OUT / sub, ignore_errors=True)
    images()
    labels()
    for sub in ("images", "labels"):
        files = sorted((OUT / sub).iterdir())
        print(f"{sub}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
