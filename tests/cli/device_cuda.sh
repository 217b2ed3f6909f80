#!/usr/bin/env bash
# --device and --dtype on generate, forward and bench: bad values, and cuda
# in a build without the CUDA backend, fail with one line. With a GPU (else
# exit 77 after those checks): greedy ids on the GPU in fp32 equal the
# CPU's, alone and in a batch; a state saved on the GPU continues on the
# CPU as the whole prompt does; forward and bench run in both precisions.
set -euo pipefail
T="$CMAMBA_TMP/device_cuda"
rm -rf "$T"; mkdir -p "$T"
"$CMAMBA_BIN" init --d-model 64 --n-layer 2 --vocab 50 --seed 3 --out "$T/m" >/dev/null
gen() { "$CMAMBA_BIN" generate --model "$T/m" --print-ids --quiet -n 16 --temperature 0 "$@"; }

source "$(dirname "$0")/lib/one_line_error.sh"
one_line_error "expected cpu or cuda" gen --ids 1,2 --device tpu
one_line_error "expected f32, bf16, q8 or q4" gen --ids 1,2 --dtype f16
if ! "$CMAMBA_BIN" --version | grep -q cuda; then
  for cmd in "gen --ids 1,2" "$CMAMBA_BIN forward --model $T/m --ids 1 --logits $T/l" \
             "$CMAMBA_BIN bench --model $T/m"; do
    one_line_error "has no CUDA backend" $cmd --device cuda
  done
  exit 0
fi
if ! out=$(gen --ids 1,2 --device cuda 2>&1); then
  [ "$(echo "$out" | wc -l)" = 1 ] || { echo "unclear error without a GPU: $out"; exit 1; }
  echo "SKIP: $out"; exit 77
fi

one_line_error "runs on the CPU only" gen --ids 1,2 --dtype q8 --device cuda
cpu=$(gen --ids 1,2,3,4,5,6,7,8,9,10)
gpu=$(gen --ids 1,2,3,4,5,6,7,8,9,10 --device cuda)
[ "$cpu" = "$gpu" ] || { echo "greedy ids differ: cpu '$cpu', gpu '$gpu'"; exit 1; }
batch=$(gen --ids 1,2,3,4,5,6,7,8,9,10 --device cuda --batch 3 | grep -v '^---' | grep .)
[ "$(echo "$batch" | sort -u)" = "$cpu" ] && [ "$(echo "$batch" | wc -l)" = 3 ] ||
  { echo "GPU greedy batch differs from the CPU's single: $batch"; exit 1; }
gen --ids 1,2,3,4,5,6 -n 1 --device cuda --save-state "$T/s.bin" >/dev/null
cont=$(gen --ids 7,8,9,10 --load-state "$T/s.bin")
[ "$cont" = "$cpu" ] || { echo "GPU state continued on the CPU: '$cont', whole '$cpu'"; exit 1; }
echo "greedy on the GPU = CPU: $gpu (also in a batch of 3 and through a GPU state file)"

for dtype in f32 bf16; do
  "$CMAMBA_BIN" forward --model "$T/m" --ids 1,2,3 --logits "$T/l_$dtype" --device cuda --dtype "$dtype"
  "$CMAMBA_BIN" forward --model "$T/m" --ids 1,2,3 --logits "$T/s_$dtype" --device cuda --dtype "$dtype" --step
  [ "$(stat -c %s "$T/l_$dtype")" = $((3 * 50 * 4)) ] && [ "$(stat -c %s "$T/s_$dtype")" = $((3 * 50 * 4)) ] ||
    { echo "forward --dtype $dtype: wrong logits size"; exit 1; }
  "$CMAMBA_BIN" bench --model "$T/m" --device cuda --dtype "$dtype" --prompt 100 --gen 8 --batch 2 \
    --reps 1 --quiet | grep -q "tokens/s" || { echo "bench --dtype $dtype printed no rates"; exit 1; }
done
echo "forward (scan and steps) and bench ran on the GPU in f32 and bf16"
