#!/usr/bin/env bash
# The `cmamba tokenize` contract: ids for --text and for stdin read byte for
# byte, --decode undoing it exactly, and every error a single line on stderr
# with a non-zero exit. Expected ids come from Hugging Face tokenizers.
set -uo pipefail
TOK="$CMAMBA_SHARED/data/gpt-neox-20b-tokenizer.json"
if [[ ! -f "$TOK" ]]; then echo "SKIP: $TOK not found"; exit 77; fi
T="$CMAMBA_TMP/tokenize"
rm -rf "$T"; mkdir -p "$T"
bin="$CMAMBA_BIN"
pass=0 fail=0

ok() { printf 'ok   %s\n' "$1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }

# same NAME WANT GOT
same() { if [[ "$2" == "$3" ]]; then ok "$1"; else bad "$1: wanted '$2', got '$3'"; fi; }

# expect NAME PATTERN -- command...: fails with one line on stderr matching PATTERN
expect() {
  local name=$1 pattern=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"
  local rc=$? lines
  lines=$(wc -l <"$T/err")
  if [[ $rc -eq 0 || $rc -gt 2 ]] || [[ $lines -ne 1 ]] || ! grep -qE -- "$pattern" "$T/err"; then
    bad "$name (exit $rc, $lines lines on stderr, wanted /$pattern/):"; head -5 "$T/err"
  else
    ok "$name: $(cat "$T/err")"
  fi
}

tok() { "$bin" tokenize --tokenizer "$TOK" "$@"; }

same text "12092 1533" "$(tok --text 'Hello world')"
same stdin-trailing-newline "12092 1533 187" "$(printf 'Hello world\n' | tok)"
same stdin-crlf-spaces "66 50276 67 2379" "$(printf 'a  b\r\n' | tok)"
same stdin-empty "" "$(tok </dev/null)"
same special-token "12092 0 1533" "$(tok --text 'Hello<|endoftext|> world')"

# --decode writes exactly the text: no newline added
tok --decode --text "12092, 1533" >"$T/dec"
same decode-text "48656c6c6f20776f726c64" "$(od -An -tx1 "$T/dec" | tr -d ' \n')"
printf '1992 320,13\n390\n' | tok --decode >"$T/dec"
same decode-stdin-separators "To be, or" "$(cat "$T/dec")"

# round trip of a file through stdin, byte for byte (the text is NFC already)
printf 'To be, or not to be:\tthat is the question.\r\n  caf\xc3\xa9 \xf0\x9f\xa4\x97 \xe6\x97\xa5\xe6\x9c\xac<|endoftext|>\n\n' >"$T/in.txt"
tok <"$T/in.txt" >"$T/ids.txt"
tok --decode <"$T/ids.txt" >"$T/out.txt"
if cmp -s "$T/in.txt" "$T/out.txt"; then ok round-trip; else bad "round-trip: $(od -c "$T/out.txt" | head -3)"; fi

if "$bin" tokenize --help | grep -q -- "--decode"; then ok help; else bad help; fi

printf '{"model": ' >"$T/bad.json"
expect missing-file "no-such\.json.*cannot open" -- "$bin" tokenize --tokenizer "$T/no-such.json" --text hi
expect bad-json "bad\.json: invalid JSON" -- "$bin" tokenize --tokenizer "$T/bad.json" --text hi
expect invalid-utf8-stdin "stdin: invalid UTF-8 at byte offset 2" -- bash -c "printf 'ab\xff' | \"$bin\" tokenize --tokenizer \"$TOK\""
expect invalid-utf8-text "--text: invalid UTF-8 at byte offset 1" -- tok --text "$(printf 'a\xc3')"
expect unknown-id "--text: unknown token id 999999" -- tok --decode --text "12092 999999"
expect non-numeric-id "--text: not a token id: 'abc'" -- tok --decode --text "12 abc"
expect negative-id "stdin: not a token id: '-5'" -- bash -c "echo '1 -5' | \"$bin\" tokenize --tokenizer \"$TOK\" --decode"
expect huge-id "not a token id: '99999999999'" -- tok --decode --text "99999999999"
expect no-tokenizer "--tokenizer is required" -- "$bin" tokenize --text hi
expect unknown-option "unknown option '--bogus'" -- tok --bogus

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
