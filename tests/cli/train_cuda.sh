#!/usr/bin/env bash
# train, grad and eval with --device cuda: bad combinations fail with one
# line (also in a build without the CUDA backend). With a GPU (else exit 77
# after those checks): a few training steps in fp32 and bf16 run and
# checkpoint, which resumes on the GPU and the CPU; grad --device cuda
# matches grad on the CPU (every tensor within 1e-4 of max |cpu|, the loss
# within 1e-5; bf16 5e-2 and 1e-3); eval --device cuda scores as the CPU.
set -euo pipefail
T="$CMAMBA_TMP/train_cuda"
rm -rf "$T"; mkdir -p "$T"
"$CMAMBA_BIN" init --d-model 64 --n-layer 2 --vocab 50 --seed 3 --out "$T/m" >/dev/null
train() { "$CMAMBA_BIN" train --task selective-copying --task-len 64 --task-tokens 4 --task-vocab 8 \
            --d-model 32 --n-layer 2 --batch 4 --steps 6 --eval-batches 1 --quiet "$@"; }

source "$(dirname "$0")/lib/one_line_error.sh"
one_line_error "trains on the GPU only" train --out "$T/x" --dtype bf16
one_line_error "not q8" train --out "$T/x" --dtype q8
one_line_error "runs on the GPU only" "$CMAMBA_BIN" grad --model "$T/m" --ids 1,2 --out "$T/g" --dtype bf16
if ! "$CMAMBA_BIN" --version | grep -q cuda; then
  one_line_error "has no CUDA backend" train --out "$T/x" --device cuda
  one_line_error "has no CUDA backend" "$CMAMBA_BIN" grad --model "$T/m" --ids 1,2 --out "$T/g" --device cuda
  one_line_error "has no CUDA backend" "$CMAMBA_BIN" eval --model "$T/m" --task copying --device cuda
  exit 0
fi
if ! out=$(train --out "$T/probe" --steps 1 --device cuda 2>&1); then
  [ "$(echo "$out" | wc -l)" = 1 ] || { echo "unclear error without a GPU: $out"; exit 1; }
  echo "SKIP: $out"; exit 77
fi

one_line_error "S6 models only" train --out "$T/x" --device cuda --ssm s4d
for dt in f32 bf16; do
  train --out "$T/$dt" --device cuda --dtype $dt | tee "$T/$dt.txt"
  grep -q accuracy "$T/$dt.txt"
  [ -f "$T/$dt/model.safetensors" ] && [ -d "$T/$dt/step-00000006" ]
done
# the finished run resumed (parameters and moments back to the GPU): the
# same final validation; and on the CPU from the GPU's checkpoint
"$CMAMBA_BIN" train --resume "$T/f32" --device cuda --quiet >"$T/again.txt"
diff "$T/f32.txt" "$T/again.txt"
"$CMAMBA_BIN" train --resume "$T/f32" --quiet
ids=$(for i in $(seq 0 200); do printf '%d,' $(( (i * 37 + i * i % 11) % 50 )); done)
ids=${ids%,}
"$CMAMBA_BIN" grad --model "$T/m" --ids $ids --out "$T/cpu.safetensors" >"$T/cpu.txt"
"$CMAMBA_BIN" grad --model "$T/m" --ids $ids --out "$T/gpu.safetensors" --device cuda >"$T/gpu.txt"
"$CMAMBA_BIN" grad --model "$T/m" --ids $ids --out "$T/bf16.safetensors" --device cuda --dtype bf16 >/dev/null
cat "$T/cpu.txt" "$T/gpu.txt"
if command -v python3 >/dev/null; then
python3 - "$T" <<'PY'
import array, json, struct, sys
def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    meta = head.pop("__metadata__", {})
    out = {}
    for k, v in head.items():
        a, b = v["data_offsets"]
        out[k] = array.array("f", raw[8 + n + a:8 + n + b])
    return out, float(meta["loss"])
t = sys.argv[1]
cpu, lc = load(f"{t}/cpu.safetensors")
# bf16: a wiring check (its precision is test_cuda_train's), one sequence
for name, tol, ltol in (("gpu", 1e-4, 1e-5), ("bf16", 5e-2, 1e-3)):
    gpu, lg = load(f"{t}/{name}.safetensors")
    assert gpu.keys() == cpu.keys()
    worst = 0
    for k in cpu:
        den = max(abs(x) for x in cpu[k]) or 1
        e = max(abs(x - y) for x, y in zip(gpu[k], cpu[k])) / den
        assert e <= tol, (name, k, e)
        worst = max(worst, e)
    print(f"grad {name} vs cpu: worst tensor {worst:.2e} (tolerance {tol}), loss {lg:.6f} vs {lc:.6f}")
    assert abs(lg - lc) <= ltol * abs(lc)
PY
fi
cpu=$("$CMAMBA_BIN" eval --model "$T/f32" --task selective-copying --task-len 64 --task-tokens 4 --examples 20 2>/dev/null)
gpu=$("$CMAMBA_BIN" eval --model "$T/f32" --task selective-copying --task-len 64 --task-tokens 4 --examples 20 --device cuda 2>/dev/null)
echo "cpu: $cpu"; echo "gpu: $gpu"
[ "${cpu%%,*}" = "${gpu%%,*}" ] || { echo "eval accuracy differs"; exit 1; }
