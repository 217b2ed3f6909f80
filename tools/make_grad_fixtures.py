#!/usr/bin/env python3
"""Make the gradient fixtures under tests/fixtures/grads/.

Independent reference: Hugging Face transformers' MambaForCausalLM in float64
(autograd through its pure-PyTorch path). For each case, the model fixture
tests/fixtures/models/<case>/ (made by tools/make_model_fixtures.py) is loaded
from its saved files, converted to float64, and

  loss = mean next-token cross-entropy over fixture.json's "ids"
         (labels = ids; transformers shifts them)
  loss.backward()

<case>.safetensors holds the gradient of every parameter in float64 under the
checkpoint's own names (a tied model has one embedding tensor, whose gradient
includes the LM head's contribution), and the loss in __metadata__["loss"].

keep_float64() from make_model_fixtures.py stops transformers' downcasts to
float32, so the reference is float64 throughout.

Cases: untied with in/out_proj biases and d_conv 3; d_conv 1 with f16
weights; 300 ids (more rows than one chunk of the C loss); the original
(state-spaces) layout with a padded vocabulary. Deterministic: re-running rewrites identical files.
Usage: python3 tools/make_grad_fixtures.py [--models DIR] [--out DIR] [case ...]
"""

import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import MambaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import keep_float64, load_original  # noqa: E402

CASES = ["hf_conv3_expand3_bias", "hf_f16_conv1", "hf_long", "orig_padded"]


def load(model_dir):
    """The reference model in float64, and whether the checkpoint uses the original layout."""
    original = os.path.exists(os.path.join(model_dir, "pytorch_model.bin"))
    if original:
        model = load_original(None, model_dir)
    else:
        model = MambaForCausalLM.from_pretrained(model_dir)
    return model.double().train(), original


def make_case(name, models_root, out_root):
    model_dir = os.path.join(models_root, name)
    with open(os.path.join(model_dir, "fixture.json")) as f:
        ids = json.load(f)["ids"]
    model, original = load(model_dir)

    with keep_float64():
        x = torch.tensor([ids], dtype=torch.long)
        out = model(input_ids=x, labels=x, use_cache=False)
        assert out.loss.dtype == torch.float64, out.loss.dtype
        out.loss.backward()
    loss = out.loss.item()

    grads = {}
    for pname, p in model.named_parameters():  # a tied lm_head is not listed again
        if original:
            pname = pname.replace("backbone.embeddings.", "backbone.embedding.")
        assert p.grad is not None and p.grad.dtype == torch.float64, pname
        grads[pname] = p.grad.detach().contiguous().clone()
    tied = model.config.tie_word_embeddings
    assert ("lm_head.weight" in grads) == (not tied), sorted(grads)

    os.makedirs(out_root, exist_ok=True)
    path = os.path.join(out_root, name + ".safetensors")
    # one key only: safetensors writes metadata keys in no fixed order
    save_file(grads, path, metadata={"loss": repr(loss)})
    size = os.path.getsize(path)
    small = min(float(g.abs().max()) for g in grads.values())
    print(f"{name:24s} L={len(ids):<4d} loss {loss:.10f}  {len(grads)} tensors, "
          f"smallest max|grad| {small:.2e}  {size / 1024:.1f} kB")
    return size


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    fixtures = os.path.join(here, "..", "tests", "fixtures")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=os.path.join(fixtures, "models"))
    ap.add_argument("--out", default=os.path.join(fixtures, "grads"))
    ap.add_argument("cases", nargs="*", help="default: " + " ".join(CASES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    total = sum(make_case(n, args.models, args.out) for n in args.cases or CASES)
    print(f"total {total / 1024:.1f} kB under {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
