#!/usr/bin/env python3
"""Hostile-input corpus for the checkpoint loaders (sae.pt, probe .pt, hub
.pth, saev visuals, safetensors, config.json).

Writes tests/fixtures/hostile/checkpoints/ (run from anywhere):

    /tmp/baseline-py/bin/python scripts/make_hostile_checkpoints.py

Each torch file starts as real `torch.save` output (saev's `dump`: a JSON
line, then the archive), then bytes are edited here: a pickle's shape
enlarged, a storage entry cut or dropped, zip size fields patched. Every file
is a few KB; the "huge" ones declare their sizes, they do not contain them.
The integration tests of sae-steer-vit, sae-steer-sae and sae-steer-probe load
each case through the public API and expect an error that names the file and
the problem, never a panic. Zip entries are rewritten with fixed timestamps
and a fixed serialization id, so rerunning the script changes no committed
file.
"""

import io
import json
import shutil
import struct
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "hostile" / "checkpoints"
PROBE_PT = FIXTURES / "probe" / "reference" / "lr_0_001__wd_0_1" / "model_step20.pt"
VIT_CONFIG = FIXTURES / "vit" / "reg" / "config.json"

D, S = 16, 64  # SAE width and latents: W_enc [16, 64] = 1,024 floats
HEADER = {"schema": 5, "cfg": {"d_model": D, "d_sae": S, "activation": {"cls": "Relu", "params": {}}}}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def torch_zip(obj) -> bytes:
    """`torch.save(obj)` as bytes, rewritten deterministically (see rezip)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return rezip(buf.getvalue())


def rezip(archive: bytes, replace=None, drop=(), deflate=()) -> bytes:
    """The archive's entries in order, with `replace[name]` as new contents,
    `drop` left out and `deflate` compressed; timestamps and the
    serialization id fixed."""
    replace = replace or {}
    src = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename in drop:
                continue
            data = replace.get(info.filename, src.read(info.filename))
            if info.filename.endswith(".data/serialization_id"):
                data = b"0" * len(data)
            method = zipfile.ZIP_DEFLATED if info.filename in deflate else zipfile.ZIP_STORED
            zi = zipfile.ZipInfo(info.filename, FIXED_TIME)
            zi.compress_type = method
            dst.writestr(zi, data)
    return out.getvalue()


def entry(archive: bytes, suffix: str) -> str:
    names = [n for n in zipfile.ZipFile(io.BytesIO(archive)).namelist() if n.endswith(suffix)]
    assert len(names) == 1, (suffix, names)
    return names[0]


def read(archive: bytes, name: str) -> bytes:
    return zipfile.ZipFile(io.BytesIO(archive)).read(name)


def patch_sizes(archive: bytes, name: str, compressed=None, uncompressed=None) -> bytes:
    """Overwrites the size fields of one entry, in its local and central headers."""
    b = bytearray(archive)
    at = b.find(b"PK\x01\x02")
    while at != -1:
        name_len, extra_len, comment_len = struct.unpack("<HHH", b[at + 28 : at + 34])
        local = struct.unpack("<I", b[at + 42 : at + 46])[0]
        if bytes(b[at + 46 : at + 46 + name_len]) == name.encode():
            for field, value in ((20, compressed), (24, uncompressed)):
                if value is not None:
                    b[at + field : at + field + 4] = struct.pack("<I", value)
                    b[local + field - 2 : local + field + 2] = struct.pack("<I", value)
            return bytes(b)
        at = b.find(b"PK\x01\x02", at + 46 + name_len + extra_len + comment_len)
    raise KeyError(name)


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1, old
    return data.replace(old, new, 1)


def saev(archive: bytes, header=HEADER) -> bytes:
    return (json.dumps(header) + "\n").encode() + archive


def write(rel: str, data: bytes):
    path = OUT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def sae_state(gen):
    return {
        "W_enc": torch.randn(D, S, generator=gen),
        "b_enc": torch.randn(S, generator=gen),
        "W_dec": torch.randn(S, D, generator=gen),
        "b_dec": torch.randn(D, generator=gen),
    }


def sae_cases(gen):
    state = sae_state(gen)
    archive = torch_zip(state)
    pkl = entry(archive, "data.pkl")
    program = read(archive, pkl)
    w_enc = pkl.replace("data.pkl", "data/0")  # the first storage: W_enc's
    write("valid.pt", saev(archive))

    # The pickle says W_enc is [32, 64]: 2,048 floats from a 1,024-float storage.
    lying = replace_once(program, b"K\x10K@\x86", b"K K@\x86")
    write("lying_shape.pt", saev(rezip(archive, {pkl: lying})))
    # The pickle's storage declares 4,096 floats; the entry holds 1,024.
    lying_numel = replace_once(program, b"M\x00\x04", b"M\x00\x10")
    write("lying_storage_numel.pt", saev(rezip(archive, {pkl: lying_numel})))
    # W_enc's storage entry cut to half its bytes (a truncated entry).
    short = read(archive, w_enc)[: D * S * 2]
    write("short_storage.pt", saev(rezip(archive, {w_enc: short})))
    # W_dec's storage entry missing altogether (burn-store returned zeros).
    write("missing_storage.pt", saev(rezip(archive, drop={pkl.replace("data.pkl", "data/2")})))
    # A stored entry whose sizes claim 4 GB in a file of a few KB.
    write("zip_bomb_stored.pt", saev(patch_sizes(archive, w_enc, 0xFFFFFFF0, 0xFFFFFFF0)))
    # A deflated entry that claims to inflate to 4 GB (deflate's ratio is <= 1032).
    deflated = rezip(archive, deflate={w_enc})
    write("zip_bomb_deflated.pt", saev(patch_sizes(deflated, w_enc, uncompressed=0xFFFFFFF0)))
    # The pickle program itself: a string running past its end, values nested
    # 5,000 deep, an opcode torch never writes.
    write("pickle_long_string.pt", saev(rezip(archive, {pkl: b"\x80\x02X\xff\xff\xff\x7fabc."})))
    write("pickle_nested.pt", saev(rezip(archive, {pkl: b"\x80\x02K\x00" + b"\x85" * 5_000 + b"."})))
    write("pickle_bad_opcode.pt", saev(rezip(archive, {pkl: b"\x80\x02\xfe."})))

    # Header lines: not JSON, no newline at all. (The >1 MiB header is made
    # by the test itself: it would not be a small fixture.)
    write("header_not_json.pt", b"this is not json\n" + archive)
    write("header_no_newline.pt", b'{"schema": 5, "cfg": {"d_model": 16' + b" " * 2000)

    # Valid, unusual layouts the reader must get right: every entry
    # deflated, and a non-contiguous W_dec (a transposed view) with b_enc at
    # a storage offset. Their expected values are the plain tensors.
    write("deflated_ok.pt", saev(rezip(archive, deflate=zipfile.ZipFile(io.BytesIO(archive)).namelist())))
    base = torch.randn(S + 10, generator=gen)
    strided = {
        "W_enc": state["W_enc"],
        "b_enc": base[10:],
        "W_dec": state["W_enc"].t(),
        "b_dec": state["b_dec"],
    }
    assert not strided["W_dec"].is_contiguous() and strided["b_enc"].storage_offset() == 10
    write("strided_ok.pt", saev(torch_zip(strided)))
    save_file({k: v.contiguous() for k, v in strided.items()}, str(OUT / "strided_ok.expected.safetensors"))


def visuals_cases(gen):
    values = torch.rand(4, 2, 3, generator=gen)
    archive = torch_zip(values)
    storage = entry(archive, "data/0")
    short = rezip(archive, {storage: read(archive, storage)[:20]})
    write("visuals_short_storage/top_values.pt", short)


def hub_cases():
    d = 64

    def hub(**overrides):
        sd = {
            "cls_token": torch.zeros(1, 1, d),
            "pos_embed": torch.zeros(1, 5, d),
            "patch_embed.proj.weight": torch.zeros(d, 3, 2, 2),
            "blocks.0.norm1.weight": torch.ones(d),
            "blocks.0.mlp.fc1.weight": torch.zeros(4, d),
        }
        sd.update(overrides)
        return torch_zip(sd)

    # The patch-embedding kernel must be 4-D [hidden, channels, p, p].
    write("hub_patch_embed_1d.pth", hub(**{"patch_embed.proj.weight": torch.zeros(d)}))
    write("hub_cls_token_0d.pth", hub(cls_token=torch.tensor(1.0)))
    write("hub_register_tokens_0d.pth", hub(register_tokens=torch.tensor(1.0)))
    # No position embedding rows at all (pos_embed[1] - 1 underflowed).
    write("hub_pos_embed_empty.pth", hub(pos_embed=torch.zeros(1, 0, d)))


def config_cases():
    base = json.loads(VIT_CONFIG.read_text())
    cases = {
        "config_zero_patch": {"patch_size": 0},
        "config_zero_heads": {"num_attention_heads": 0},
        "config_heads_not_dividing": {"num_attention_heads": 3},
        "config_huge_mlp_ratio": {"mlp_ratio": 1e30},
        "config_negative_mlp_ratio": {"mlp_ratio": -4},
        "config_huge_layers": {"num_hidden_layers": 10**15},
        "config_huge_image": {"image_size": 14 * 2**33},
    }
    for name, change in cases.items():
        write(f"{name}/config.json", (json.dumps({**base, **change}, indent=2) + "\n").encode())


def probe_cases():
    data = PROBE_PT.read_bytes()
    cfg = (PROBE_PT.parent / "cfg.json").read_bytes()
    # A step number that is u64::MAX: `step + 1` overflowed in the latest-file choice.
    write("probe_step_overflow/cfg.json", cfg)
    write("probe_step_overflow/model_step18446744073709551615.pt", data)
    write("probe_step_overflow/model_step20.pt", data)
    # The weight's shape in the pickle larger than its storage.
    line_end = data.index(b"\n") + 1
    header, archive = data[:line_end], rezip(data[line_end:])
    pkl = entry(archive, "data.pkl")
    header_json = json.loads(header)
    c, d = header_json["out_features"], header_json["in_features"]
    lying = replace_once(read(archive, pkl), bytes([ord("K"), c, ord("K"), d, 0x86]), bytes([ord("K"), c, ord("K"), d * 2, 0x86]))
    write("probe_lying_shape/cfg.json", cfg)
    write("probe_lying_shape/model_step1.pt", header + rezip(archive, {pkl: lying}))


def safetensors_cases():
    def st(header: dict, data: bytes, declared_len=None) -> bytes:
        text = json.dumps(header).encode()
        n = len(text) if declared_len is None else declared_len
        return struct.pack("<Q", n) + text + data

    # The header length field claims 2^62 bytes of JSON.
    write("st_header_len_huge.safetensors", st({}, b"", declared_len=1 << 62))
    # A shape of 1,000,000 floats over 16 data bytes.
    write(
        "st_shape_lie.safetensors",
        st({"mean": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 16]}}, b"\0" * 16),
    )
    # Offsets that match the shape but run past the end of the file.
    write(
        "st_offsets_past_end.safetensors",
        st({"mean": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}}, b"\0" * 16),
    )
    # A shape whose element count overflows 64 bits.
    write(
        "st_shape_overflow.safetensors",
        st({"mean": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}, b"\0" * 16),
    )


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    gen = torch.Generator().manual_seed(14)
    sae_cases(gen)
    visuals_cases(gen)
    hub_cases()
    config_cases()
    probe_cases()
    safetensors_cases()
    files = sorted(p for p in OUT.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(f"{len(files)} files, {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
