#!/usr/bin/env bash
# A checkpoint with the exact shapes of mamba-130m (random weights, ~517 MB):
# it loads, generates, and stays resident at about the size of its weights
# (the projection matrices move from the file's mapping into huge pages at load,
# the mapping's pages dropped: src/model/weights.c).
set -euo pipefail
if [ "${CMAMBA_SANITIZED:-0}" = 1 ]; then
  echo "SKIP: the 130m-shape check runs in the optimised build only"; exit 77
fi
dir="$CMAMBA_TMP/mamba-130m-shape"
mkdir -p "$CMAMBA_TMP"
[ -f "$dir/model.safetensors" ] || "$CMAMBA_BIN" init --preset 130m --out "$dir" --seed 1
weights=$(stat -c %s "$dir/model.safetensors")
ids=$("$CMAMBA_BIN" generate --model "$dir" --ids 1,2,3,4,5,6,7,8 -n 8 --temperature 0 \
      --print-ids 2>"$CMAMBA_TMP/130m.err")
cat "$CMAMBA_TMP/130m.err"
n=$(wc -w <<<"$ids")
[ "$n" -eq 8 ] || { echo "expected 8 generated ids, got '$ids'"; exit 1; }
rss_mib=$(sed -nE 's/.*peak RSS: ([0-9.]+) MiB.*/\1/p' "$CMAMBA_TMP/130m.err")
awk -v rss="$rss_mib" -v w="$weights" 'BEGIN {
  ratio = rss * 1048576 / w
  printf "weights %.1f MiB, peak RSS %.1f MiB, ratio %.2f (limit 1.15)\n", w / 1048576, rss, ratio
  exit !(ratio < 1.15)
}'

# the load's time is reported, not asserted (a timed check fails on a busy
# machine; speed is bench's business)
sed -nE 's/^(load: [0-9.]+ s).*/\1/p' "$CMAMBA_TMP/130m.err"
