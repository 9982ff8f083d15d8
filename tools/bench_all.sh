#!/usr/bin/env bash
# Runs every benchmark tool on the current device, one after another, writing each tool's
# markdown to OUTDIR/<tool>.md, JSON to OUTDIR/<tool>.json and progress to OUTDIR/<tool>.log.
# Usage: bash tools/bench_all.sh OUTDIR [tool ...]   (default: all tools below)
# The stream bandwidth measured first is passed to the others as their roofline denominator.
set -uo pipefail
out=${1:?usage: bench_all.sh OUTDIR [tool ...]}; shift
mkdir -p "$out"
tools=("$@"); [ ${#tools[@]} -gt 0 ] || tools=(bench_device bench_kernels bench_attention bench_gdn bench_moe)
cd "$(dirname "$0")/.."
gbps=""
for t in "${tools[@]}"; do
  [ -f "tools/$t.py" ] || { echo "skip $t: tools/$t.py not present" >&2; continue; }
  extra=()
  [ "$t" != bench_device ] && [ -n "$gbps" ] && extra=(--stream-gbps "$gbps")
  echo "== $t ${extra[*]}" >&2
  python3 "tools/$t.py" "${extra[@]}" --json "$out/$t.json" >"$out/$t.md" 2>"$out/$t.log"
  echo "   exit $?" >&2
  cat "$out/$t.md"
  if [ "$t" = bench_device ]; then
    gbps=$(python3 -c "import json;print(round(json.load(open('$out/bench_device.json'))['stream_read']['gbps'],1))")
  fi
done
