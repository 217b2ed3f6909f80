#!/usr/bin/env bash
# Hostile and malformed inputs: each must give exactly one line on stderr
# naming the file or argument and the problem, and exit 1 or 2 (never a
# signal, never a sanitizer report). The inputs are corrupted copies of a
# small checkpoint written by `cmamba init`.
set -uo pipefail
T="$CMAMBA_TMP/malformed"
rm -rf "$T"; mkdir -p "$T"
bin="$CMAMBA_BIN"
"$bin" init --d-model 16 --n-layer 2 --vocab 50 --out "$T/good" --seed 3 || exit 1

pass=0 fail=0
# expect NAME PATTERN -- command...
expect() {
  local name=$1 pattern=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"
  local rc=$? lines
  lines=$(wc -l <"$T/err")
  if [[ $rc -ne 1 && $rc -ne 2 ]] || [[ $lines -ne 1 ]] || ! grep -qiE -- "$pattern" "$T/err" ||
     grep -qE "Sanitizer|runtime error" "$T/err"; then
    echo "FAIL $name (exit $rc, $lines lines on stderr, wanted /$pattern/):"; head -5 "$T/err"
    fail=$((fail + 1))
  else
    printf 'ok   %-28s %s\n' "$name" "$(cat "$T/err")"
    pass=$((pass + 1))
  fi
}

# copy of the good model, to be corrupted
fresh() { rm -rf "$T/$1"; cp -r "$T/good" "$T/$1"; }
header_len() { od -An -tu8 -N8 "$1" | tr -d ' '; }
# rebuild FILE with header JSON from stdin and FILE's data section
set_header() {
  local f=$1 n; n=$(header_len "$f")
  local json; json=$(cat)
  tail -c +$((9 + n)) "$f" >"$f.data"
  local len=${#json} le="" i
  for i in 0 1 2 3 4 5 6 7; do le+=$(printf '\\x%02x' $(((len >> (8 * i)) & 255))); done
  { printf "$le"; printf '%s' "$json"; cat "$f.data"; } >"$f"
  rm -f "$f.data"
}
get_header() { local n; n=$(header_len "$1"); tail -c +9 "$1" | head -c "$n"; }
fwd() { "$bin" forward --model "$T/$1" --ids 1,2,3 --logits "$T/logits.bin"; }
ST=model.safetensors

fresh trunc; head -c 3000 "$T/good/$ST" >"$T/trunc/$ST"
expect truncated-file "safetensors" -- fwd trunc
fresh tiny; printf 'abc' >"$T/tiny/$ST"
expect shorter-than-header "safetensors" -- fwd tiny
fresh longhdr; printf '\xff\xff\xff\x00\x00\x00\x00\x00{}' >"$T/longhdr/$ST"
expect header-longer-than-file "header" -- fwd longhdr
fresh hugehdr; { printf '\x00\x00\x00\x00\x00\x00\x00\x80'; tail -c +9 "$T/good/$ST"; } >"$T/hugehdr/$ST"
expect header-length-absurd "header" -- fwd hugehdr
fresh badjson; get_header "$T/good/$ST" | sed 's/{/[/' | set_header "$T/badjson/$ST"
expect header-not-json "json|header" -- fwd badjson
fresh dtype; get_header "$T/good/$ST" | sed 's/"F32"/"Q99"/' | set_header "$T/dtype/$ST"
expect unknown-dtype "dtype" -- fwd dtype
fresh i32; get_header "$T/good/$ST" | sed 's/"dtype":"F32","shape":\[16\]/"dtype":"I32","shape":[16]/; s/"dtype": "F32", "shape": \[16\]/"dtype": "I32", "shape": [16]/' | set_header "$T/i32/$ST"
expect integer-weights "dtype|I32" -- fwd i32
fresh offs; get_header "$T/good/$ST" | sed -E '0,/"data_offsets": ?\[[0-9]+, ?([0-9]+)\]/s//"data_offsets":[0,99999999]/' | set_header "$T/offs/$ST"
expect offsets-out-of-range "offset|size|exceed|range" -- fwd offs
fresh overlap; get_header "$T/good/$ST" | sed -E 's/"data_offsets": ?\[([0-9]+), ?([0-9]+)\]/"data_offsets":[0,\2]/2' | set_header "$T/overlap/$ST"
expect offsets-overlapping "overlap|size|offset" -- fwd overlap
fresh missing; get_header "$T/good/$ST" | sed 's/backbone.norm_f.weight/backbone.norm_g.weight/' | set_header "$T/missing/$ST"
expect missing-tensor "missing tensor 'backbone.norm_f.weight'" -- fwd missing
fresh shape; sed -i 's/"hidden_size": *16/"hidden_size": 24/' "$T/shape/config.json"
expect wrong-shape "has shape .* expected" -- fwd shape
fresh cfgjson; printf '{"hidden_size": 16,' >"$T/cfgjson/config.json"
expect config-bad-json "config.json" -- fwd cfgjson
fresh cfgkey; sed -i 's/"hidden_size": *16,//' "$T/cfgkey/config.json"
expect config-missing-key "hidden_size" -- fwd cfgkey
fresh cfgbig; sed -i 's/"num_hidden_layers": *2/"num_hidden_layers": 1000000000000/' "$T/cfgbig/config.json"
expect config-absurd-size "num_hidden_layers" -- fwd cfgbig
fresh cfgtype; sed -i 's/"hidden_size": *16/"hidden_size": "sixteen"/' "$T/cfgtype/config.json"
expect config-wrong-type "hidden_size" -- fwd cfgtype
fresh noweights; rm "$T/noweights/$ST"
expect no-weights-file "model.safetensors|pytorch_model.bin" -- fwd noweights
fresh shard; rm "$T/shard/$ST"
printf '{"metadata": {}, "weight_map": {"backbone.norm_f.weight": "model-00001-of-00002.safetensors"}}' \
  >"$T/shard/model.safetensors.index.json"
expect shard-missing "model-00001-of-00002" -- fwd shard
fresh shardpath; rm "$T/shardpath/$ST"
printf '{"weight_map": {"backbone.norm_f.weight": "../good/model.safetensors"}}' \
  >"$T/shardpath/model.safetensors.index.json"
expect shard-path-escape "\.\." -- fwd shardpath
expect model-dir-missing "nonexistent" -- "$bin" forward --model "$T/nonexistent" --ids 1 --logits "$T/l.bin"
expect ids-non-numeric "--ids" -- "$bin" forward --model "$T/good" --ids 1,x,3 --logits "$T/l.bin"
expect ids-negative "--ids" -- "$bin" forward --model "$T/good" --ids 1,-4 --logits "$T/l.bin"
expect id-beyond-vocab "out of range" -- "$bin" forward --model "$T/good" --ids 1,50 --logits "$T/l.bin"
expect ids-empty "--ids" -- "$bin" forward --model "$T/good" --ids "" --logits "$T/l.bin"
expect n-not-a-number "-n" -- "$bin" generate --model "$T/good" --ids 1 -n lots
expect temperature-negative "temperature" -- "$bin" generate --model "$T/good" --ids 1 --temperature -1
expect logits-unwritable "cannot create" -- "$bin" forward --model "$T/good" --ids 1 --logits "$T/no/such/dir/l.bin"
expect unknown-option "--frobnicate" -- "$bin" forward --frobnicate
expect isa-unknown "CMAMBA_ISA" -- env CMAMBA_ISA=avx3 "$bin" forward --model "$T/good" --ids 1 --logits "$T/l.bin"
# quantised checkpoints (cmamba quantize): every disagreement with the
# layout of docs/formats.md is one line naming the file and the tensor
"$bin" quantize --model "$T/good" --dtype q8 --out "$T/goodq8" || exit 1
freshq() { rm -rf "$T/$1"; cp -r "$T/goodq8" "$T/$1"; }
QW=backbone.layers.0.mixer.in_proj.weight
freshq qnoscale; get_header "$T/goodq8/$ST" | sed "s/\"$QW.scale\"/\"$QW.scales\"/" | set_header "$T/qnoscale/$ST"
expect q8-scale-missing "missing tensor '$QW.scale'" -- fwd qnoscale
freshq qscaledt; get_header "$T/goodq8/$ST" | sed -E "s/(\"$QW.scale\": ?\{\"dtype\": ?)\"F16\"/\1\"BF16\"/" | set_header "$T/qscaledt/$ST"
expect q8-scale-dtype "scales must be F16" -- fwd qscaledt
freshq qshape; get_header "$T/goodq8/$ST" | sed -E "s/(\"$QW\": ?\{\"dtype\": ?\"I8\", ?\"shape\": ?)\[64, ?64\]/\1[32,128]/" | set_header "$T/qshape/$ST"
expect q8-quants-shape "'$QW' has shape \[32, 128\], expected \[64, 64\]" -- fwd qshape
freshq qscaleshape; get_header "$T/goodq8/$ST" | sed -E "s/(\"$QW.scale\": ?\{\"dtype\": ?\"F16\", ?\"shape\": ?)\[64, ?2\]/\1[128,1]/" | set_header "$T/qscaleshape/$ST"
expect q8-scale-shape "'$QW.scale' has shape" -- fwd qscaleshape
# an infinite scale: 0x7c00 over the first scale of the tensor
freshq qinf; f="$T/qinf/$ST"
at=$(get_header "$f" | grep -oE "\"$QW.scale\": ?\{[^}]*\}" | sed -E 's/.*data_offsets": ?\[([0-9]+).*/\1/')
printf '\x00\x7c' | dd of="$f" bs=1 seek=$((8 + $(header_len "$f") + at)) conv=notrunc status=none
expect q8-scale-infinite "non-finite scale at \[0, 0\]" -- fwd qinf
freshq qtrunc; head -c 5000 "$T/goodq8/$ST" >"$T/qtrunc/$ST"
expect q8-truncated "safetensors" -- fwd qtrunc
expect quantize-bad-dtype "--dtype" -- "$bin" quantize --model "$T/good" --dtype q3 --out "$T/q3"
expect quantize-unwritable "cannot create" -- "$bin" quantize --model "$T/good" --dtype q4 --out "$T/no/such/dir"
expect forward-bad-dtype "--dtype" -- "$bin" forward --model "$T/good" --dtype int8 --ids 1 --logits "$T/l.bin"
tokfile="$CMAMBA_SHARED/data/gpt-neox-20b-tokenizer.json"
if [ -f "$tokfile" ]; then
  expect prompt-invalid-utf8 "UTF-8" -- "$bin" generate --model "$T/good" --tokenizer "$tokfile" --prompt $'ab\xffcd'
  printf '{"model": {"type": "BPE", "vocab": {' >"$T/tok.json"
  expect tokenizer-bad-json "tok.json" -- "$bin" generate --model "$T/good" --tokenizer "$T/tok.json" --prompt hi
else
  echo "note: $tokfile absent, tokenizer cases not run"
fi

echo "malformed inputs: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
