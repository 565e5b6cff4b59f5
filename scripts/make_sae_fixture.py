"""Dev-time generator of the saev SAE parity fixtures (needs torch, safetensors).

Writes small random SAEs in the saev `sae.pt` container (one JSON line, then
`torch.save(state_dict)`), byte for byte the way saev's `dump` does, in each
header form the Rust loader must read, plus the reference computations.

    python scripts/make_sae_fixture.py tests/fixtures/sae

Outputs (a few tens of KB each):
  pre_schema.pt        preprint-era header = the config itself (d_vit, exp_factor, ...),
                       ReLU, encode centres on b_dec
  schema1.pt           {schema: 1, cfg, cls, commit, lib}, ReLU, centres on b_dec
  schema2_relu.pt      schema 2, d_vit + exp_factor, activation {cls: Relu}, no centring
  schema5_topk.pt      schema 5, d_model + d_sae, activation {cls: TopK, top_k}, no centring
  missing_w_dec.pt     pre-schema file whose state dict lacks W_dec (error test)
  norm.safetensors     mean [d] and scalar [] for input normalization
  <name>.expected.safetensors
                       x [n, d] (model units), f_x [n, s], x_hat [n, d] (normalized
                       units), steered [n, d] (model units, latent j set to v, error kept:
                       x + scalar * (x_n' - x_n));
                       metadata: latent, value, normalized ("true"/"false")
The references are computed in float64 from the float32 weights and stored as float32.
"""

import json
import pathlib
import sys

import torch
from safetensors.torch import save_file

N = 8  # input rows
LATENT = 5  # steered latent
VALUE = 3.5  # value it is set to


def make_state(d, s, gen):
    w_enc = torch.randn(d, s, generator=gen) / d**0.5
    b_enc = torch.randn(s, generator=gen) * 0.1
    w_dec = torch.randn(s, d, generator=gen)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)  # saev keeps unit-norm rows
    b_dec = torch.randn(d, generator=gen) * 0.5
    return {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec}


def dump(path, header, state):
    # Exactly saev's nn.dump: header line, then torch.save into the same handle.
    with open(path, "wb") as fd:
        fd.write((json.dumps(header) + "\n").encode("utf-8"))
        torch.save(state, fd)


def encode(state, x, centre, top_k):
    sd = {k: v.double() for k, v in state.items()}
    h = ((x - sd["b_dec"]) if centre else x) @ sd["W_enc"] + sd["b_enc"]
    if top_k is None:
        return torch.relu(h)
    # saev's TopKActivation: keep the k largest pre-activations, no ReLU.
    _, idx = torch.topk(h, top_k, dim=-1)
    return torch.zeros_like(h).scatter(-1, idx, 1.0) * h


def decode(state, f):
    return f @ state["W_dec"].double() + state["b_dec"].double()


def reference(out, name, state, x, centre, top_k, norm):
    x = x.double()
    if norm is not None:
        mean, scalar = norm["mean"].double(), norm["scalar"].double()
        x_n = (x.clamp(-1e5, 1e5) - mean) / scalar
    else:
        x_n = x
    f = encode(state, x_n, centre, top_k)
    x_hat = decode(state, f)
    f_edit = f.clone()
    f_edit[:, LATENT] = VALUE
    x_n_steered = x_n - x_hat + decode(state, f_edit)
    # Back to model units as a change of x: equal to x_n' * scalar + mean
    # except where the clamp changed x, whose clamped-away part is kept.
    steered = x + (x_n_steered - x_n) * (scalar if norm is not None else 1.0)
    tensors = {
        "x": x.float(),
        "f_x": f.float(),
        "x_hat": x_hat.float(),
        "steered": steered.float(),
    }
    meta = {
        "latent": str(LATENT),
        "value": str(VALUE),
        "normalized": "true" if norm is not None else "false",
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / f"{name}.expected.safetensors", meta)


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/sae")
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)

    # Preprint-era config (saev 0.1.0 config.SparseAutoencoder) plus keys from
    # even older files that loaders must ignore.
    d, exp = 16, 4
    pre_cfg = {
        "d_vit": d,
        "exp_factor": exp,
        "sparsity_coeff": 4e-4,
        "n_reinit_samples": 524288,
        "ghost_grads": False,
        "remove_parallel_grads": True,
        "normalize_w_dec": True,
        "seed": 0,
        "l1_coeff": 4e-4,
        "use_ghost_grads": False,
    }
    state = make_state(d, d * exp, gen)
    dump(out / "pre_schema.pt", pre_cfg, state)
    x = torch.randn(N, d, generator=gen) * 2.0
    reference(out, "pre_schema", state, x, centre=True, top_k=None, norm=None)

    # Schema 1 with a normalization file: the published-SAE situation.
    d, exp = 24, 4
    cfg1 = {k: v for k, v in pre_cfg.items() if k not in ("l1_coeff", "use_ghost_grads")}
    cfg1["d_vit"] = d
    header1 = {"schema": 1, "cfg": cfg1, "cls": "SparseAutoencoder", "commit": "0" * 40, "lib": "0.1.0"}
    state = make_state(d, d * exp, gen)
    dump(out / "schema1.pt", header1, state)
    mean = torch.randn(d, generator=gen) * 3.0
    scalar = torch.tensor(2.5)
    save_file({"mean": mean, "scalar": scalar}, out / "norm.safetensors")
    x = mean + torch.randn(N, d, generator=gen) * 5.0
    x[0, 0] = 3e5  # exercises the clamp
    reference(out, "schema1", state, x, centre=True, top_k=None, norm={"mean": mean, "scalar": scalar})

    # Schema 2 (July 2025): activation serialised as {cls, params}, still d_vit.
    d, exp = 16, 8
    cfg2 = {
        "d_vit": d,
        "exp_factor": exp,
        "n_reinit_samples": 524288,
        "remove_parallel_grads": True,
        "normalize_w_dec": True,
        "seed": 0,
        "activation": {"cls": "Relu", "params": {}},
    }
    state = make_state(d, d * exp, gen)
    dump(out / "schema2_relu.pt", {"schema": 2, "cfg": cfg2, "commit": "unknown", "lib": "1.0.0"}, state)
    x = torch.randn(N, d, generator=gen) * 2.0
    reference(out, "schema2_relu", state, x, centre=False, top_k=None, norm=None)

    # Schema 5: d_model, d_sae and TopK.
    d, s, k = 32, 96, 8
    cfg5 = {
        "d_model": d,
        "d_sae": s,
        "activation": {"cls": "TopK", "params": {"top_k": k}},
        "reinit_blend": 0.8,
        "reinit_enc_dec_tranpose": True,
        "remove_parallel_grads": True,
        "normalize_w_dec": True,
    }
    state = make_state(d, s, gen)
    dump(out / "schema5_topk.pt", {"schema": 5, "cfg": cfg5, "commit": "unknown", "lib": "1.2.0"}, state)
    x = torch.randn(N, d, generator=gen) * 2.0
    reference(out, "schema5_topk", state, x, centre=False, top_k=k, norm=None)

    # For the loader's error test: a valid header and archive without W_dec.
    d, exp = 8, 2
    state = make_state(d, d * exp, gen)
    del state["W_dec"]
    dump(out / "missing_w_dec.pt", dict(pre_cfg, d_vit=d, exp_factor=exp), state)


if __name__ == "__main__":
    main()
