#!/usr/bin/env python3
"""Writes the PyTorch zip fixtures of tests/test_torch_zip.c with torch.save.

    state_dict.pt   an OrderedDict like model.state_dict(): f32/f16/bf16/f64/i64
                    tensors of several shapes (a scalar, an empty dim), a tied
                    embedding/lm_head pair sharing one storage, a slice with a
                    nonzero storage offset, a Parameter, and the _metadata
                    attribute that state_dict() attaches
    transposed.pt   a non-contiguous tensor, which the loader must refuse
    expected.json   for each tensor of state_dict.pt: dtype, shape, and its
                    values as exact doubles (row-major)

Usage: python3 tools/make_torch_zip_fixtures.py [out_dir]
"""
import collections
import json
import os
import sys

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.float64: "F64", torch.int64: "I64"}


def state_dict():
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()
    sd["f32.matrix"] = torch.randn(3, 4, generator=g)
    sd["f16.vector"] = torch.randn(5, generator=g).half()
    sd["bf16.cube"] = torch.randn(2, 3, 2, generator=g).bfloat16()
    sd["f64.vector"] = torch.randn(3, generator=g).double()
    sd["i64.ids"] = torch.tensor([0, -1, 2**40, -(2**62)], dtype=torch.int64)
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(2, 0)
    # tied weights: two names, one tensor, one storage record
    emb = torch.randn(4, 3, generator=g)
    sd["backbone.embedding.weight"] = emb
    sd["lm_head.weight"] = emb
    # a view that starts 4 elements into its base's storage
    base = torch.randn(3, 4, generator=g)
    sd["slice"] = base[1:]
    sd["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    return sd


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "tests", "fixtures", "torch_zip")
    os.makedirs(out, exist_ok=True)
    sd = state_dict()
    torch.save(sd, os.path.join(out, "state_dict.pt"))
    assert sd["slice"].storage_offset() == 4

    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    torch.save(collections.OrderedDict([("ok", torch.ones(2)), ("wt", w.t())]),
               os.path.join(out, "transposed.pt"))

    expected = collections.OrderedDict()
    for name, t in sd.items():
        expected[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                          "values": t.detach().double().flatten().tolist()
                          if t.is_floating_point() else t.flatten().tolist()}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
