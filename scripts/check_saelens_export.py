"""Dev-time check that SAELens itself reads what `sae-steer export-sae` writes
(needs torch, safetensors and sae-lens >= 6).

Exports a saev checkpoint of the fixtures with its normalization folded in, then
compares SAELens's latents and reconstructions on raw activations with saev's
computation on normalised ones:

    cargo run --example export_sae -- --sae tests/fixtures/sae/schema1.pt \\
        --normalization tests/fixtures/sae/norm.safetensors --out /tmp/exported
    python scripts/check_saelens_export.py /tmp/exported tests/fixtures/sae/schema1.pt \\
        tests/fixtures/sae/norm.safetensors tests/fixtures/sae/schema1.expected.safetensors
"""

import io
import sys

import torch
from sae_lens import SAE
from safetensors.torch import load_file


def saev_tensors(path):
    """A saev sae.pt: one JSON header line, then a torch.save archive."""
    data = open(path, "rb").read()
    return torch.load(io.BytesIO(data[data.index(b"\n") + 1:]), map_location="cpu", weights_only=True)


def main(exported, sae_pt, norm_path, expected_path):
    sd = saev_tensors(sae_pt)
    norm = load_file(norm_path)
    mean, scalar = norm["mean"], norm["scalar"].reshape(())
    x = load_file(expected_path)["x"]  # model units
    # saev clamps activations to +-1e5 before normalising, which SAELens
    # cannot express; the fixtures include such outliers to test the clamp.
    x = x[(x.abs() <= 1e5).all(dim=1)]
    # saev, schema 1: f = relu((x_n - b_dec) W_enc + b_enc), x_hat in model units.
    x_n = (x.clamp(-1e5, 1e5) - mean) / scalar
    f = torch.relu((x_n - sd["b_dec"]) @ sd["W_enc"] + sd["b_enc"])
    x_hat = (f @ sd["W_dec"] + sd["b_dec"]) * scalar + mean

    sae = SAE.load_from_disk(exported)
    with torch.no_grad():
        f_lens = sae.encode(x)
        x_hat_lens = sae.decode(f_lens)
    scale = lambda t: t.abs().clamp(min=1.0)  # noqa: E731
    err_f = ((f_lens - f).abs() / scale(f)).max().item()
    err_x = ((x_hat_lens - x_hat).abs() / scale(x_hat)).max().item()
    print(f"SAELens {type(sae).__name__} from {exported}, {len(x)} rows: latents within "
          f"{err_f:.2e}, reconstructions within {err_x:.2e} (relative)")
    assert err_f < 1e-4 and err_x < 1e-4


if __name__ == "__main__":
    main(*sys.argv[1:5])
