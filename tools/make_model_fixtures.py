#!/usr/bin/env python3
"""Make the model parity fixtures under tests/fixtures/models/.

Independent reference: Hugging Face transformers' MambaForCausalLM (on CPU its
pure-PyTorch slow path).  For every case: build a small float32 model, perturb
every parameter away from its init so that every term of the Mamba function
matters, save the checkpoint exactly as a user would download it, load the
SAVED checkpoint back, convert it to float64 and compute

  logits.f64    full forward (no cache) over fixture ids, [len(ids), rows] f64 LE
  fixture.json  ids, rows, greedy prompt + 24 greedy ids, cmamba config sizes

The script checks HF's own cached recurrent path (token by token) against its
full forward (1e-10 relative) and makes sure every greedy step has a top-2
logit gap > 1e-3 of the logit scale (so fp32 rounding cannot flip it).

transformers' Mamba code downcasts to float32 in a few places (RMSNorm,
residual_in_fp32, `.float()` in the scan, the final `.float()` on logits), so a
plain `model.double()` is only fp32-accurate.  While computing the reference,
`keep_float64()` makes those downcasts no-ops for float64 tensors; the script
prints how far the unpatched HF forward is from the patched one (~1e-7).

Deterministic: fixed seeds; re-running rewrites byte-identical files.
Usage: python3 tools/make_model_fixtures.py [--out tests/fixtures/models] [case ...]
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from transformers import MambaConfig, MambaForCausalLM

N_IDS = 40
N_PROMPT = 5
N_GREEDY = 24
GAP_FRAC = 1e-3  # top-2 gap must exceed GAP_FRAC * max|logit| of that step
MIN_DISTINCT = 8  # a greedy continuation stuck on one token would test little
TARGET_LOGIT_STD = 3.0

# name -> (MambaConfig kwargs, extra options)
CASES = {
    "hf_dstate8_conv2": (
        dict(hidden_size=32, num_hidden_layers=2, state_size=8, conv_kernel=2, expand=2,
             vocab_size=97, tie_word_embeddings=True, layer_norm_epsilon=1e-5,
             use_bias=False, use_conv_bias=True, time_step_rank="auto"),
        dict(seed=101),
    ),
    "hf_conv3_expand3_bias": (
        dict(hidden_size=24, num_hidden_layers=3, state_size=4, conv_kernel=3, expand=3,
             vocab_size=131, tie_word_embeddings=False, layer_norm_epsilon=1e-6,
             use_bias=True, use_conv_bias=False, time_step_rank=5),
        dict(seed=102, emb_std=0.02, out_scale=0.05, eps_matters=True),
    ),
    "hf_untied_eps": (
        dict(hidden_size=48, num_hidden_layers=2, state_size=16, conv_kernel=4, expand=2,
             vocab_size=256, tie_word_embeddings=False, layer_norm_epsilon=1e-6,
             time_step_rank="auto"),
        dict(seed=103, emb_std=0.02, out_scale=0.05, eps_matters=True),
    ),
    "hf_sharded_bf16": (
        dict(hidden_size=40, num_hidden_layers=2, state_size=12, conv_kernel=4, expand=2,
             vocab_size=203, tie_word_embeddings=True),
        dict(seed=104, dtype=torch.bfloat16, max_shard_size="30KB"),
    ),
    "hf_f16_conv1": (
        dict(hidden_size=16, num_hidden_layers=2, state_size=2, conv_kernel=1, expand=2,
             vocab_size=64, use_bias=True),
        dict(seed=105, dtype=torch.float16, out_scale=3.0),
    ),
    "orig_padded": (
        # mamba_ssm defaults for ssm_cfg {}: d_state 16, d_conv 4, expand 2, dt_rank auto,
        # conv_bias True, bias False; norm_epsilon 1e-5.
        dict(hidden_size=32, num_hidden_layers=2, state_size=16, conv_kernel=4, expand=2,
             vocab_size=1008, tie_word_embeddings=True, layer_norm_epsilon=1e-5),
        dict(seed=106, original=True, vocab_unpadded=1001, pad_multiple=8),
    ),
    "hf_long": (
        dict(hidden_size=32, num_hidden_layers=2, vocab_size=50),
        dict(seed=107, n_ids=300),
    ),
}

HF_KEYS = ["hidden_size", "num_hidden_layers", "state_size", "expand", "conv_kernel",
           "time_step_rank", "intermediate_size", "use_bias", "use_conv_bias",
           "layer_norm_epsilon", "vocab_size", "tie_word_embeddings"]


# ---------------------------------------------------------------------------
# float64 reference helpers

@contextlib.contextmanager
def keep_float64():
    """Make `.float()` / `.to(torch.float32)` no-ops on float64 tensors."""
    orig_float, orig_to = torch.Tensor.float, torch.Tensor.to

    def _float(self, *a, **k):
        if self.dtype == torch.float64:
            return self
        return orig_float(self, *a, **k)

    def _to(self, *a, **k):
        if self.dtype == torch.float64:
            a = tuple(torch.float64 if x is torch.float32 else x for x in a)
            if k.get("dtype") is torch.float32:
                k["dtype"] = torch.float64
        return orig_to(self, *a, **k)

    torch.Tensor.float, torch.Tensor.to = _float, _to
    try:
        yield
    finally:
        torch.Tensor.float, torch.Tensor.to = orig_float, orig_to


def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@torch.no_grad()
def full_logits(model, ids, want=torch.float64):
    out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    assert out.logits.dtype == want, out.logits.dtype
    return out.logits[0].double().numpy().copy()


@torch.no_grad()
def cached_logits(model, ids):
    """HF's recurrent path: one token per call, state carried in a DynamicCache.
    transformers 5.24 names the argument `cache` (`cache_params` is deprecated) and
    needs no cache_position for Mamba; the first call is a 1-token prefill, the
    following ones go through causal_conv1d_update / selective_state_update."""
    cache = transformers.DynamicCache(config=model.config)
    rows = []
    for t in ids:
        out = model(input_ids=torch.tensor([[t]], dtype=torch.long), cache=cache, use_cache=True)
        cache = out.cache
        assert out.logits.dtype == torch.float64
        rows.append(out.logits[0, -1].numpy().copy())
    return np.stack(rows)


@torch.no_grad()
def greedy(model, prompt, n, valid_rows):
    """Explicit loop over full forwards; returns (ids, min relative gap), or None when a
    step is too close to call, picks a padding row, or the continuation is degenerate."""
    seq = list(prompt)
    min_gap = math.inf
    for _ in range(n):
        row = full_logits(model, seq)[-1]
        order = np.argsort(-row, kind="stable")
        best, second = int(order[0]), int(order[1])
        gap = (row[best] - row[second]) / np.max(np.abs(row))
        if gap <= GAP_FRAC or best >= valid_rows:
            return None
        min_gap = min(min_gap, gap)
        seq.append(best)
    if len(set(seq[len(prompt):])) < MIN_DISTINCT:
        return None
    return seq[len(prompt):], min_gap


# ---------------------------------------------------------------------------
# model construction

@torch.no_grad()
def perturb(model, cfg, gen, opts):
    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=gen) * std + mean

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=gen) * (hi - lo) + lo

    d, di = cfg.hidden_size, cfg.intermediate_size
    R, N = cfg.time_step_rank, cfg.state_size
    bb = model.backbone
    # Tied: embedding rows of std s give logits of std ~ sqrt(d) * s * rms(norm_f weight);
    # aim at TARGET_LOGIT_STD (logits then span roughly +-10..20).
    s_head = TARGET_LOGIT_STD / math.sqrt(d) / 1.04
    # Untied: a small residual stream (embedding std 0.02 as in the reference recipe,
    # out_proj scaled to match) so that layer_norm_epsilon visibly matters.
    s_emb = opts.get("emb_std", s_head)
    s_out = opts.get("out_scale", 1.0) / math.sqrt(di)
    bb.embeddings.weight.copy_(normal(bb.embeddings.weight.shape, s_emb))
    for layer in bb.layers:
        mx = layer.mixer
        layer.norm.weight.copy_(uniform((d,), 0.5, 1.5))
        # in_proj: x and z of std ~2 so that the conv output (taps N(0, 0.3)) reaches the
        # nonlinear range of silu
        mx.in_proj.weight.copy_(normal(mx.in_proj.weight.shape, 2.0 / math.sqrt(d)))
        mx.conv1d.weight.copy_(normal(mx.conv1d.weight.shape, 0.3))
        # x_proj: delta rows O(1); B and C rows larger (more so for a small state) so
        # that the state term C.h is comparable to the skip term D.x
        xw = normal(mx.x_proj.weight.shape, 1.0 / math.sqrt(di))
        xw[R:] *= 2.0 * (16.0 / N) ** 0.25
        mx.x_proj.weight.copy_(xw)
        # dt_proj weight large enough that delta spans ~1e-3..1 (dt bias kept near its
        # init, + N(0, 0.5)), so exp(delta*A) ranges from ~1 (long memory) to ~0
        mx.dt_proj.weight.copy_(normal(mx.dt_proj.weight.shape, 3.0 / math.sqrt(R)))
        mx.dt_proj.bias.add_(normal((di,), 0.5))
        mx.A_log.add_(normal((di, N), 0.3))
        mx.D.copy_(uniform((di,), 0.5, 1.5))
        mx.out_proj.weight.copy_(normal(mx.out_proj.weight.shape, s_out))
        for lin in (mx.in_proj, mx.out_proj, mx.conv1d):
            if lin.bias is not None:
                std = 0.1 * (s_emb / s_head if lin is mx.out_proj else 1.0)
                lin.bias.copy_(normal(lin.bias.shape, std))
    bb.norm_f.weight.copy_(uniform((d,), 0.5, 1.5))
    if not cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() != bb.embeddings.weight.data_ptr()
        model.lm_head.weight.copy_(normal(model.lm_head.weight.shape, s_head))
    else:
        assert model.lm_head.weight.data_ptr() == bb.embeddings.weight.data_ptr()


@torch.no_grad()
def sensitivity(model, ids, ref):
    """Relative logit change when one term of the function is altered: a check that
    every term matters at well above the 1e-4 test tolerance."""
    layers = [l.mixer for l in model.backbone.layers]
    norms = [l.norm for l in model.backbone.layers] + [model.backbone.norm_f]
    R, N = int(model.config.time_step_rank), model.config.state_size
    edits = {
        "A": lambda: [m.A_log.add_(0.05) for m in layers],
        "D": lambda: [m.D.mul_(0.95) for m in layers],
        "dt_b": lambda: [m.dt_proj.bias.add_(0.05) for m in layers],
        "dt_w": lambda: [m.dt_proj.weight.mul_(0.95) for m in layers],
        "B": lambda: [m.x_proj.weight[R:R + N].mul_(0.95) for m in layers],
        "C": lambda: [m.x_proj.weight[R + N:].mul_(0.95) for m in layers],
        "conv_w0": lambda: [m.conv1d.weight[..., 0].mul_(0.95) for m in layers],
        "conv_b": lambda: [m.conv1d.bias.mul_(0.95) for m in layers if m.conv1d.bias is not None],
        "in_b": lambda: [m.in_proj.bias.mul_(0.95) for m in layers if m.in_proj.bias is not None],
        "out_b": lambda: [m.out_proj.bias.mul_(0.95) for m in layers if m.out_proj.bias is not None],
        "norm": lambda: [n.weight.mul_(0.95) for n in norms[:-1]],
        "norm_f": lambda: [norms[-1].weight[: norms[-1].weight.shape[0] // 2].mul_(0.95)],
        "eps": lambda: [setattr(n, "variance_epsilon", n.variance_epsilon * 10) or n for n in norms],
    }
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eps0 = [n.variance_epsilon for n in norms]
    out = {}
    for name, edit in edits.items():
        if edit():
            out[name] = rel(full_logits(model, ids), ref)
        model.load_state_dict(state)
        for n, e in zip(norms, eps0):
            n.variance_epsilon = e
    return out


def make_ids(rng, n, hi):
    """n ids in [0, hi), including 0 and hi-1 at random interior positions."""
    ids = [int(x) for x in rng.integers(0, hi, size=n)]
    pos = rng.choice(np.arange(1, n), size=2, replace=False)
    ids[int(pos[0])], ids[int(pos[1])] = 0, hi - 1
    return ids


def clean_dir(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


def save_hf(model, cfg, out, opts):
    dtype = opts.get("dtype", torch.float32)
    model = model.to(dtype)
    kw = {}
    if "max_shard_size" in opts:
        kw["max_shard_size"] = opts["max_shard_size"]
    model.save_pretrained(out, **kw)
    # save_pretrained writes every config attribute today; make sure of the keys
    # that SPEC.md's HF layout lists, whatever a future version drops.
    path = os.path.join(out, "config.json")
    with open(path) as f:
        saved = json.load(f)
    missing = [k for k in HF_KEYS if k not in saved]
    if missing:
        for k in missing:
            saved[k] = getattr(cfg, k)
        with open(path, "w") as f:
            json.dump(saved, f, indent=2, sort_keys=True)
            f.write("\n")
    return missing


def save_original(model, cfg, out, opts):
    """state-spaces layout: config.json (d_model, n_layer, unpadded vocab_size, ...) and
    pytorch_model.bin with backbone.embedding.weight and lm_head.weight sharing storage."""
    sd = {}
    for k, v in model.state_dict().items():
        k = k.replace("backbone.embeddings.", "backbone.embedding.")
        sd[k] = v
    emb = sd["backbone.embedding.weight"]
    sd["lm_head.weight"] = emb  # tied: same storage, as mamba_ssm's tied models save it
    torch.save(sd, os.path.join(out, "pytorch_model.bin"))
    conf = {
        "d_model": cfg.hidden_size,
        "n_layer": cfg.num_hidden_layers,
        "vocab_size": opts["vocab_unpadded"],
        "ssm_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": opts["pad_multiple"],
        "tie_embeddings": True,
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")


def load_original(cfg, out):
    """Back into an HF model from the saved original-layout files only."""
    with open(os.path.join(out, "config.json")) as f:
        conf = json.load(f)
    sd = torch.load(os.path.join(out, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    assert sd["lm_head.weight"].untyped_storage().data_ptr() == \
        sd["backbone.embedding.weight"].untyped_storage().data_ptr(), "lm_head not shared"
    m = conf["pad_vocab_size_multiple"]
    vocab = (conf["vocab_size"] + m - 1) // m * m
    hf_cfg = MambaConfig(hidden_size=conf["d_model"], num_hidden_layers=conf["n_layer"],
                         vocab_size=vocab, tie_word_embeddings=True, state_size=16,
                         conv_kernel=4, expand=2, layer_norm_epsilon=1e-5)
    model = MambaForCausalLM(hf_cfg)
    sd = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    assert model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr()
    return model


def fmt_size(n):
    return f"{n / 1024:.1f} kB"


def make_case(name, out_root):
    hf_kw, opts = CASES[name]
    seed = opts["seed"]
    torch.manual_seed(seed)
    cfg = MambaConfig(**hf_kw)
    model = MambaForCausalLM(cfg).float().eval()
    gen = torch.Generator().manual_seed(seed)
    perturb(model, cfg, gen, opts)

    out = os.path.join(out_root, name)
    clean_dir(out)
    original = opts.get("original", False)
    added_keys = []
    if original:
        save_original(model, cfg, out, opts)
        ref_model = load_original(cfg, out)
    else:
        added_keys = save_hf(model, cfg, out, opts)
        ref_model = MambaForCausalLM.from_pretrained(out)
        stored = opts.get("dtype", torch.float32)
        assert ref_model.backbone.embeddings.weight.dtype == stored, \
            (ref_model.backbone.embeddings.weight.dtype, stored)
    del model
    ref_model = ref_model.double().eval()
    rcfg = ref_model.config
    V = rcfg.vocab_size
    valid = opts.get("vocab_unpadded", V)

    rng = np.random.default_rng(seed)
    ids = make_ids(rng, opts.get("n_ids", N_IDS), valid)

    plain = full_logits(ref_model, ids, torch.float32)  # HF as is: logits come back as fp32
    with keep_float64():
        logits = full_logits(ref_model, ids)
        stepped = cached_logits(ref_model, ids)
        e_cache = rel(stepped, logits)
        assert e_cache < 1e-10, f"{name}: HF cached path differs from full forward: {e_cache:.3e}"
        for attempt in range(200):
            prompt = [int(x) for x in rng.integers(0, valid, size=N_PROMPT)]
            res = greedy(ref_model, prompt, N_GREEDY, valid)
            if res is not None:
                break
        else:
            raise SystemExit(f"{name}: no robust greedy prompt found")
        greedy_ids, min_gap = res
        sens = sensitivity(ref_model, ids, logits)
    weak = {k: v for k, v in sens.items() if v < 1e-3 and (k != "eps" or opts.get("eps_matters"))}
    if weak:
        raise SystemExit(f"{name}: terms that barely change the logits: {weak}")
    e_plain = rel(plain, logits)
    assert e_plain < 1e-4, f"{name}: unpatched HF forward too far from float64: {e_plain:.3e}"
    assert logits.shape == (len(ids), V)
    logits.astype("<f8").tofile(os.path.join(out, "logits.f64"))

    fixture = {
        "ids": ids,
        "rows": V,
        "greedy_prompt": prompt,
        "greedy_ids": greedy_ids,
        "config": {
            "d_model": rcfg.hidden_size,
            "n_layer": rcfg.num_hidden_layers,
            "vocab_size": V,
            "d_inner": rcfg.intermediate_size,
            "d_state": rcfg.state_size,
            "d_conv": rcfg.conv_kernel,
            "dt_rank": int(rcfg.time_step_rank),
            "eps": rcfg.layer_norm_epsilon,
            "use_bias": rcfg.use_bias,
            "use_conv_bias": rcfg.use_conv_bias,
            "tie": rcfg.tie_word_embeddings,
        },
        "transformers_version": transformers.__version__,
    }
    if original:
        fixture["config"]["vocab_size_unpadded"] = valid
    with open(os.path.join(out, "fixture.json"), "w") as f:
        f.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in fixture.items())
                + "\n}\n")

    # re-load check of what was written
    if not original:
        back = MambaForCausalLM.from_pretrained(out).float().eval()
        with torch.no_grad():
            l32 = back(input_ids=torch.tensor([ids]), use_cache=False).logits[0].double().numpy()
        e32 = rel(l32, logits)
        assert e32 < 1e-4, f"{name}: reloaded fp32 model off by {e32:.3e}"
    else:
        e32 = float("nan")

    files = sorted(os.listdir(out))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in files)
    print(f"{name:24s} L={len(ids):<4d} V={V:<5d} logits [{logits.min():+7.3f}, {logits.max():+7.3f}] "
          f"std {logits.std():.2f}  cached-vs-full {e_cache:.1e}  hf-fp32-casts {e_plain:.1e}  "
          f"reload-fp32 {e32:.1e}  greedy min gap {min_gap:.3f} ({len(set(greedy_ids))} distinct, prompt try {attempt + 1})  "
          f"{fmt_size(size)}: {' '.join(files)}"
          + (f"  [added config keys {added_keys}]" if added_keys else ""))
    print("    relative logit change per 5% edit (eps: x10): "
          + " ".join(f"{k} {v:.0e}" for k, v in sens.items()))
    return size


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "models"))
    ap.add_argument("cases", nargs="*", help="subset of: " + " ".join(CASES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    names = args.cases or list(CASES)
    for n in names:
        if n not in CASES:
            sys.exit(f"unknown case {n}")
    os.makedirs(args.out, exist_ok=True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    total = sum(make_case(n, args.out) for n in names)
    print(f"total {fmt_size(total)} in {len(names)} cases under {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
