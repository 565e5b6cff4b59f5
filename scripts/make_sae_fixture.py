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
  schema1_topk.pt      schema 1 "format 1A" (July 2025): cls = "TopK", top_k in cfg,
                       encode centres on b_dec
  schema1_batchtopk.pt schema 1 format 1A with cls = "BatchTopK": no threshold in the state
                       dict, so inference is saev's eval rule with threshold 0 (= ReLU)
  schema5_batchtopk.pt schema 5 BatchTopK with the `activation.threshold` buffer (JumpReLU)
  missing_w_dec.pt     pre-schema file whose state dict lacks W_dec (error test)
  norm.safetensors     mean [d] and scalar [] for input normalization
  <name>.expected.safetensors
                       x [n, d] (model units), f_x [n, s], x_hat [n, d] (normalized
                       units), steered [n, d] (model units, latent j set to v, error kept:
                       x + scalar * (x_n' - x_n));
                       metadata: latent, value, normalized ("true"/"false")
The references are computed in float64 from the float32 weights and stored as float32.

Feature statistics in saev's `visuals` format (saev 2025-01, `get_topk_patch`,
`sort_by = patch`), computed by a copy of its loop:
  stats_sae.pt, stats_norm.safetensors
                       a schema-1 ReLU SAE (d 16, 64 latents; latent 0 never fires,
                       latent 1 always does) and its input normalization
  stats_input.safetensors
                       x [24 images, 6 patches, 16] in model units
  stats_saev/          top_values.pt [64, 5, 6], top_img_i.pt [64, 5] int32,
                       sparsity.pt [64], mean_values.pt [64]: torch.save(tensor) each
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


def encode(state, x, centre, top_k, threshold=0.0):
    sd = {k: v.double() for k, v in state.items()}
    h = ((x - sd["b_dec"]) if centre else x) @ sd["W_enc"] + sd["b_enc"]
    if top_k is None:
        return torch.relu(h)
    if top_k == "threshold":
        # saev's BatchTopKActivation in eval mode: JumpReLU at the stored threshold.
        return torch.where(h > max(threshold, 0.0), h, torch.zeros_like(h))
    # saev's TopKActivation: keep the k largest pre-activations, no ReLU.
    _, idx = torch.topk(h, top_k, dim=-1)
    return torch.zeros_like(h).scatter(-1, idx, 1.0) * h


def decode(state, f):
    return f @ state["W_dec"].double() + state["b_dec"].double()


def reference(out, name, state, x, centre, top_k, norm, threshold=0.0):
    x = x.double()
    if norm is not None:
        mean, scalar = norm["mean"].double(), norm["scalar"].double()
        x_n = (x.clamp(-1e5, 1e5) - mean) / scalar
    else:
        x_n = x
    f = encode(state, x_n, centre, top_k, threshold)
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

    # Schema 1, format 1A (saev 2025-07-15 .. 07-31): `cls` names the activation
    # config class, whose dataclasses.asdict is `cfg` (top_k included). Encode
    # still centres on b_dec there.
    d, exp, k = 16, 6, 6
    cfg1a = {
        "d_vit": d,
        "exp_factor": exp,
        "n_reinit_samples": 524288,
        "remove_parallel_grads": True,
        "normalize_w_dec": True,
        "seed": 0,
        "top_k": k,
    }
    header = {"schema": 1, "cfg": cfg1a, "cls": "TopK", "commit": "unknown", "lib": "0.1.0"}
    state = make_state(d, d * exp, gen)
    dump(out / "schema1_topk.pt", header, state)
    x = torch.randn(N, d, generator=gen) * 2.0
    reference(out, "schema1_topk", state, x, centre=True, top_k=k, norm=None)

    # The same with BatchTopK: its module had no buffers then, so the state
    # dict has no threshold and saev's eval-mode rule (threshold 0) is ReLU.
    header = dict(header, cls="BatchTopK")
    state = make_state(d, d * exp, gen)
    dump(out / "schema1_batchtopk.pt", header, state)
    x = torch.randn(N, d, generator=gen) * 2.0
    reference(out, "schema1_batchtopk", state, x, centre=True, top_k="threshold", norm=None)

    # Schema 5 BatchTopK with its running inference threshold (saev 2025-11 on).
    d, s, k, threshold = 16, 64, 8, 0.35
    cfg5b = {
        "d_model": d,
        "d_sae": s,
        "activation": {
            "cls": "BatchTopK",
            "params": {
                "key": "batch-top-k",
                "top_k": k,
                "sparsity": {"cls": "NoSparsity", "params": {"key": "none"}},
                "momentum": 0.1,
                "aux": {"cls": "AuxK", "params": {"key": "auxk"}},
            },
        },
        "reinit_blend": 0.8,
        "remove_parallel_grads": True,
        "normalize_w_dec": True,
    }
    state = make_state(d, s, gen)
    state["activation.threshold"] = torch.tensor(threshold)
    dump(out / "schema5_batchtopk.pt", {"schema": 5, "cfg": cfg5b, "commit": "unknown", "lib": "1.2.0"}, state)
    x = torch.randn(N, d, generator=gen) * 2.0
    reference(out, "schema5_batchtopk", state, x, centre=False, top_k="threshold", norm=None, threshold=threshold)

    saev_stats(out, gen)


def saev_stats(out, gen):
    """saev's visuals.get_topk_patch (2025-01-23, sort_by = "patch") on a small SAE."""
    n_imgs, n_patches, d, exp, top_k, imgs_per_batch = 24, 6, 16, 4, 5, 4
    s = d * exp
    cfg = {
        "d_vit": d,
        "exp_factor": exp,
        "sparsity_coeff": 4e-4,
        "n_reinit_samples": 524288,
        "ghost_grads": False,
        "remove_parallel_grads": True,
        "normalize_w_dec": True,
        "seed": 0,
    }
    state = make_state(d, s, gen)
    state["b_enc"][0] = -100.0  # never fires: NaN mean, zero-valued exemplars
    state["b_enc"][1] = 100.0  # fires everywhere: frequency 1
    dump(out / "stats_sae.pt", {"schema": 1, "cfg": cfg, "cls": "SparseAutoencoder", "commit": "0" * 40, "lib": "0.1.0"}, state)
    mean = torch.randn(d, generator=gen)
    scalar = torch.tensor(1.5)
    save_file({"mean": mean, "scalar": scalar}, out / "stats_norm.safetensors")
    x = mean + torch.randn(n_imgs, n_patches, d, generator=gen) * 2.0
    save_file({"x": x.contiguous()}, out / "stats_input.safetensors")

    # saev's activations.Dataset hands out normalized patch activations in
    # image-major order; the SAE runs in float32.
    acts = ((x.clamp(-1e5, 1e5) - mean) / scalar).reshape(n_imgs * n_patches, d)
    image_i = torch.arange(n_imgs).repeat_interleave(n_patches)

    def gather_batched(value, i):
        batch_size, n, dim = value.shape
        _, k = i.shape
        batch_i = torch.arange(batch_size)[:, None].expand(-1, k)
        return value[batch_i, i]

    top_values_p = torch.full((s, top_k, n_patches), -1.0)
    top_i_im = torch.zeros((s, top_k), dtype=torch.int)
    sparsity_S = torch.zeros((s,))
    mean_values_S = torch.zeros((s,))
    batch_size = imgs_per_batch * n_patches
    for start in range(0, n_imgs * n_patches, batch_size):
        vit_acts_BD = acts[start : start + batch_size]
        batch_image_i = image_i[start : start + batch_size]
        h = (vit_acts_BD - state["b_dec"]) @ state["W_enc"] + state["b_enc"]
        sae_acts_BS = torch.relu(h)
        sae_acts_SB = sae_acts_BS.T
        mean_values_S += sae_acts_SB.sum(dim=1)
        sparsity_S += (sae_acts_SB > 0).sum(dim=1)
        i_im = torch.sort(torch.unique(batch_image_i)).values
        values_p = sae_acts_SB.reshape(s, len(i_im), n_patches)
        _, k = torch.topk(sae_acts_SB, k=top_k, dim=1)
        k_im = k // n_patches
        values_p = gather_batched(values_p, k_im)
        i_im = i_im[k_im]
        all_values_p = torch.cat((top_values_p, values_p), axis=1)
        _, k = torch.topk(all_values_p.max(axis=-1).values, k=top_k, axis=1)
        top_values_p = gather_batched(all_values_p, k)
        top_i_im = torch.gather(torch.cat((top_i_im, i_im.int()), axis=1), 1, k)
    mean_values_S /= sparsity_S
    sparsity_S /= n_imgs * n_patches

    root = out / "stats_saev"
    root.mkdir(exist_ok=True)
    torch.save(top_values_p, root / "top_values.pt")
    torch.save(top_i_im, root / "top_img_i.pt")
    torch.save(mean_values_S, root / "mean_values.pt")
    torch.save(sparsity_S, root / "sparsity.pt")


if __name__ == "__main__":
    main()
