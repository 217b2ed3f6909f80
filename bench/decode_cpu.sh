#!/bin/bash
# CPU decoding figures for docs/performance.md: every format at batch 1 and 8
# (2 threads) and batch 1 (1 thread), three series; ratios are taken within
# a series. Usage: bench/decode_cpu.sh [build dir] [series]
B=${1:-build}/cmamba M=/tmp/m130
[ -d $M ] || $B init --preset 130m --out $M
for s in $(seq ${2:-3}); do
  for cfg in "2 1" "2 8" "1 1"; do set -- $cfg
    for d in f32 bf16 q8 q4; do
      $B bench --model $M --prompt 16 --gen 128 --threads $1 --batch $2 --dtype $d --quiet --json |
        tail -1 | python3 -c "import json, sys; j = json.load(sys.stdin); print('series $s  %-4s  threads %d  batch %d  %7.1f tok/s  %5.1f%% of %5.1f GB/s' % ('$d', j['threads'], j['batch'], j['decode_tokens_per_s'], 100 * j['decode_bandwidth_fraction'], j['memory_read_bytes_per_s'] / 1e9))"
    done
  done
done
