#!/usr/bin/env bash
# OpenBLAS runs kernels for this CPU, not its generic SSE3 ones (which it
# falls back to on CPU models newer than itself: src/cpu/blas.h), and a
# choice made in OPENBLAS_CORETYPE is kept. Also: CMAMBA_ISA picks the GEMV
# kernels that --version names.
set -euo pipefail
bin="$CMAMBA_BIN"
gemv() { CMAMBA_ISA=$1 "$bin" --version | sed -n 's/.*GEMV kernels: \([a-z0-9]*\).*/\1/p'; }
[ "$(gemv scalar)" = scalar ] || { echo "FAIL: CMAMBA_ISA=scalar gave '$(gemv scalar)'"; exit 1; }
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  [ "$(gemv avx2)" = avx2 ] || { echo "FAIL: CMAMBA_ISA=avx2 gave '$(gemv avx2)'"; exit 1; }
fi
echo "GEMV kernels: $(gemv '') (CMAMBA_ISA=scalar and avx2 honoured)"
kernels=$("$bin" --version | sed -n 's/.*OpenBLAS kernels: \([A-Za-z0-9]*\)[;)].*/\1/p')
echo "OpenBLAS kernels: ${kernels:-none}"
[ -n "$kernels" ] && [ "$kernels" != none ] || { echo "SKIP: not linked to OpenBLAS"; exit 77; }
fail=0
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  case "$kernels" in
    Prescott|Core2) echo "FAIL: generic kernels ($kernels) on a CPU with AVX2 and FMA"; fail=1 ;;
  esac
fi
forced=$(OPENBLAS_CORETYPE=Prescott "$bin" --version | sed -n 's/.*OpenBLAS kernels: \([A-Za-z0-9]*\)[;)].*/\1/p')
[ "$forced" = Prescott ] || { echo "FAIL: OPENBLAS_CORETYPE=Prescott gave $forced"; fail=1; }
exit $fail
