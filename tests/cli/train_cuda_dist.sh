#!/usr/bin/env bash
# Data-parallel training on the GPU (exit 77 without one). A group of one
# launched with `cmamba launch` sums its gradients through NCCL inside the
# backward and must give the losses of a plain run; two ranks
# sharing this GPU (host sums) with --batch 4 each must follow one process
# with --batch 8 (tolerance 1e-5 relative for both: summation order).
set -euo pipefail
T="$CMAMBA_TMP/train_cuda_dist"
rm -rf "$T"; mkdir -p "$T"
port=$((20000 + $$ % 20000))
args=(train --task selective-copying --task-len 64 --task-tokens 4 --task-vocab 8 --d-model 32
      --n-layer 2 --steps 40 --lr 3e-3 --eval-every 20 --eval-batches 2 --device cuda)
if ! out=$("$CMAMBA_BIN" "${args[@]}" --batch 8 --steps 1 --quiet --out "$T/probe" 2>&1); then
  [ "$(echo "$out" | wc -l)" = 1 ] || { echo "unclear error without a GPU: $out"; exit 1; }
  echo "SKIP: $out"; exit 77
fi
"$CMAMBA_BIN" "${args[@]}" --batch 8 --quiet --out "$T/one" >/dev/null
"$CMAMBA_BIN" launch --nproc 1 --port "$port" "${args[@]}" --batch 8 --out "$T/nccl" 2>"$T/nccl.err" >/dev/null
grep -o "gradients summed by [^|]*" "$T/nccl.err"
"$CMAMBA_BIN" launch --nproc 2 --port "$((port + 1))" "${args[@]}" --batch 4 --out "$T/two" 2>"$T/two.err" >/dev/null
grep -o "gradients summed by [^|]*" "$T/two.err"
python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
load = lambda d: json.load(open(f"{t}/{d}/step-00000040/trainer.json"))
one = load("one")
# the scan backward sums dA, dB, dC with atomics: GPU runs agree to rounding, not bits
for run, tol in (("nccl", 1e-5), ("two", 1e-5)):
    other = load(run)
    for k in ("loss", "val_loss"):
        x, y = one[k], other[k]
        assert len(x) == len(y), (run, k)
        err = max(abs(p - q) for p, q in zip(x, y)) / max(abs(p) for p in x)
        print(f"{run} {k}: max |a - b| / max |a| = {err:.2e} (tolerance {tol:g})")
        assert err <= tol, (run, k, err)
assert one["loss"][-1] < one["loss"][0] - 0.1, "the run must learn for the comparison to mean anything"
PY
