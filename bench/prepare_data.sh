#!/usr/bin/env bash
# Measure `xlmr data prepare` on the shared corpus: time, re-run skipping, and peak RSS when the
# input doubles. Usage: bench/prepare_data.sh TOKENIZER_DIR [WORK_DIR] (WORK_DIR outside the repo).
set -euo pipefail
TOK=${1:?tokenizer directory}
WORK=${2:-/tmp/xlmr_prepare_bench}
CORPUS=${CORPUS:-$(dirname "$0")/../../shared/corpus}
PY=${PYTHON:-python}
rm -rf "$WORK" && mkdir -p "$WORK/corpus2x"
for f in "$CORPUS"/*.txt; do cat "$f" "$f" > "$WORK/corpus2x/$(basename "$f")"; done

run() {  # run NAME ARGS...: prints wall time, CPU time and peak RSS of the whole process tree
  local name=$1; shift
  /usr/bin/time -f "$name: wall %e s, user+sys %U+%S s, peak RSS %M KiB" -o "$WORK/$name.time" \
    "$PY" -m xlmr data prepare --tokenizer "$TOK" "$@" > "$WORK/$name.log"
  cat "$WORK/$name.time"; head -1 "$WORK/$name.log"
}
run first    --corpus "$CORPUS"         --out "$WORK/out1"  --workers 2
run rerun    --corpus "$CORPUS"         --out "$WORK/out1"  --workers 2
run one_x_w1 --corpus "$CORPUS"         --out "$WORK/o1w1"  --workers 1
run two_x_w1 --corpus "$WORK/corpus2x"  --out "$WORK/o2w1"  --workers 1
run two_x    --corpus "$WORK/corpus2x"  --out "$WORK/out2"  --workers 2
du -sh "$WORK/out1" "$WORK/out2"
sed -n '2,$p' "$WORK/first.log"
