# Sourced by the CLI tests: one_line_error MESSAGE-PART COMMAND... passes when
# the command fails with exactly one line on stderr containing MESSAGE-PART.
one_line_error() {
  local want=$1 out; shift
  if out=$("$@" 2>&1 >/dev/null); then echo "accepted: $*"; exit 1; fi
  [ "$(echo "$out" | wc -l)" = 1 ] && [[ "$out" == *"$want"* ]] ||
    { echo "unclear error for $*: $out"; exit 1; }
  echo "refused: $out"
}
