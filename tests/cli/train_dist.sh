#!/usr/bin/env bash
# Data-parallel training: 2 processes (cmamba launch) with --batch 4 each
# follow the loss curve of one process with --batch 8, to fp32 summation
# order (tolerance 1e-5 relative), and end with the same weights; a rank
# that fails stops the group with a message naming it.
set -euo pipefail
T="$CMAMBA_TMP/train_dist"
rm -rf "$T"; mkdir -p "$T"
port=$((20000 + $$ % 20000))
args=(train --task selective-copying --task-len 48 --task-tokens 4 --task-vocab 6 --d-model 16
      --steps 60 --lr 3e-3 --eval-every 20 --eval-batches 2 --threads 1 --quiet)

"$CMAMBA_BIN" "${args[@]}" --batch 8 --out "$T/one" >"$T/one.txt"
"$CMAMBA_BIN" launch --nproc 2 --port "$port" "${args[@]}" --batch 4 --out "$T/two" >"$T/two.txt"
cat "$T/one.txt" "$T/two.txt"
[ "$(wc -l <"$T/two.txt")" = "$(wc -l <"$T/one.txt")" ] # rank 0 alone reports

if command -v python3 >/dev/null; then
python3 - "$T" <<'EOF'
import json, sys
t = sys.argv[1]
a = json.load(open(f"{t}/one/step-00000060/trainer.json"))
b = json.load(open(f"{t}/two/step-00000060/trainer.json"))
for k in ("loss", "val_loss"):
    x, y = a[k], b[k]
    assert len(x) == len(y) == (60 if k == "loss" else 3), (k, len(x), len(y))
    err = max(abs(p - q) for p, q in zip(x, y)) / max(abs(p) for p in x)
    print(f"{k}: {len(x)} values, max |one - two| / max |one| = {err:.2e} (tolerance 1e-5)")
    assert err <= 1e-5
assert a["loss"][-1] < a["loss"][0] - 0.1, "the run must learn for the comparison to mean anything"
EOF
else # the printed final accuracy and loss must agree
  [ "$(head -1 "$T/one.txt")" = "$(head -1 "$T/two.txt")" ] || { echo "final results differ"; exit 1; }
fi

# a rank that cannot start brings the group down with a message
if "$CMAMBA_BIN" launch --nproc 2 --port "$((port + 1))" train --bogus 2>"$T/err"; then exit 1; fi
grep -q "rank 0 exited with status\|rank 1 exited with status" "$T/err"
# a malformed group environment is one clear line
if WORLD_SIZE=2 RANK=5 "$CMAMBA_BIN" train --steps 1 2>"$T/err"; then exit 1; fi
grep -q "RANK=5" "$T/err"
echo "2 processes x batch 4 = 1 process x batch 8; failures reported"
