#!/usr/bin/env python3
"""Loads a checkpoint folder written by cmamba (train or init) with Hugging Face
transformers' MambaForCausalLM and compares its logits with `cmamba forward`.

usage: tools/check_hf_load.py DIR [--cmamba build/cmamba] [--ids 1,2,3,...]
Prints max|a-b| / max|b| and exits 1 above the tolerance (1e-4; both sides fp32).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import MambaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--cmamba", default="build/cmamba")
    ap.add_argument("--ids", default=None, help="comma-separated ids (default: 64 random ids)")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()

    model = MambaForCausalLM.from_pretrained(a.dir, torch_dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    if a.ids:
        ids = [int(x) for x in a.ids.split(",")]
    else:
        ids = np.random.default_rng(0).integers(0, vocab, 64).tolist()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.f32")
        subprocess.run([a.cmamba, "forward", "--model", a.dir, "--ids", ",".join(map(str, ids)),
                        "--logits", out], check=True)
        got = np.fromfile(out, dtype="<f4").reshape(len(ids), -1)
    ref = ref[:, : got.shape[1]]
    err = np.abs(got - ref).max() / np.abs(ref).max()
    print(f"{a.dir}: transformers vs cmamba forward over {len(ids)} tokens: "
          f"max|a-b|/max|b| = {err:.2e} (tol {a.tol:.0e})")
    sys.exit(0 if err <= a.tol else 1)


if __name__ == "__main__":
    main()
