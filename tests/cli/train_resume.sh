#!/usr/bin/env bash
# Kill -9 during training, then --resume: the run must end exactly where an
# uninterrupted one ends (same weights, same loss history, bit for bit).
set -euo pipefail
T="$CMAMBA_TMP/train_resume"
rm -rf "$T"; mkdir -p "$T"
args=(train --task selective-copying --task-len 48 --task-tokens 4 --task-vocab 6 --d-model 16
      --batch 4 --steps 240 --save-every 10 --eval-every 40 --eval-batches 2 --threads 1 --quiet)
final=step-00000240

"$CMAMBA_BIN" "${args[@]}" --out "$T/a" >/dev/null

# killed at its first checkpoint; a release build can finish the whole run
# in a tenth of a second, so a kill that comes too late is tried again
for _ in 1 2 3 4 5; do
  rm -rf "$T/b"
  "$CMAMBA_BIN" "${args[@]}" --out "$T/b" >/dev/null &
  pid=$!
  for _ in $(seq 1 20000); do
    [ -d "$T/b/step-00000010" ] && break
    sleep 0.001
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  last=$(ls "$T/b" | grep '^step-' | sort | tail -1)
  [ "$last" != "$final" ] && break
done
echo "killed after $last"
[ "$last" != "$final" ] || { echo "the run finished before the kill, five times: test is void"; exit 1; }

"$CMAMBA_BIN" train --resume "$T/b" --quiet >/dev/null
cmp "$T/a/model.safetensors" "$T/b/model.safetensors"
cmp "$T/a/$final/trainer.json" "$T/b/$final/trainer.json"
cmp "$T/a/$final/optimizer.safetensors" "$T/b/$final/optimizer.safetensors"
echo "resumed run identical to the uninterrupted one (weights, optimizer state, loss history)"

# a resume from a folder without checkpoints is a clear error
if "$CMAMBA_BIN" train --resume "$T" 2>"$T/err"; then exit 1; fi
grep -q "no checkpoint" "$T/err"
