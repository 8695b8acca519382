#!/usr/bin/env bash
# The demo job (configs/demo.yaml) timed stage by stage, with where the time goes inside each stage.
#
#     bash bench/e2e_demo.sh            # after `make test`'s set-up; ~10 minutes on 2 cores
#
# Runs `s2d generate`, `s2d train` and `s2d eval` one after the other (what `s2d run` does in one process; as
# three commands each pays one embedded Ray start, a few seconds), into runs/bench-e2e, timing each command.
# generate includes curation: the vote runs in the same streaming Ray Data pipeline, on batches as they come
# out of the replicas. The breakdown comes from what each stage records: <out>/metrics.json (generate),
# <out>/model/train_metrics.json (train), <out>/eval/metrics.json (eval). The last line is the total.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bench-e2e}
S2D=${S2D:-.venv/bin/s2d}
PYTHON=${PYTHON:-.venv/bin/python}
rm -rf "$OUT" "$OUT.logs"
mkdir -p "$OUT.logs"

declare -A SECONDS_OF
for stage in generate train eval; do
    started=$(date +%s%N)
    if ! "$S2D" "$stage" configs/demo.yaml "out=$OUT" --no-progress >"$OUT.logs/$stage.log" 2>&1; then
        tail -n 40 "$OUT.logs/$stage.log"
        echo "e2e_demo: $stage failed (log: $OUT.logs/$stage.log)" >&2
        exit 1
    fi
    elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
    SECONDS_OF[$stage]=$(printf '%d.%03d' $((elapsed_ms / 1000)) $((elapsed_ms % 1000)))
    printf '%-8s %7s s\n' "$stage" "${SECONDS_OF[$stage]}"
done

"$PYTHON" - "$OUT" "${SECONDS_OF[generate]}" "${SECONDS_OF[train]}" "${SECONDS_OF[eval]}" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
wall = dict(zip(("generate", "train", "eval"), map(float, sys.argv[2:5])))
generate = json.loads((out / "metrics.json").read_text())
train = json.loads((out / "model" / "train_metrics.json").read_text())
evaluation = json.loads((out / "eval" / "metrics.json").read_text())
stages = generate.get("stage_seconds", {})
total = sum(wall.values())

print()
print(f"generate {wall['generate']:7.1f} s  {generate['inputs']} inputs, {generate['samples']} samples, "
      f"{generate['tokens']} System 2 tokens = {generate['tokens'] / wall['generate']:.0f} tok/s over the stage")
order = ["plan, Ray start, inputs", "replica start + first batch", "generate + curate pipeline",
         "curate (in Ray tasks)", "shard commit + accounting (driver)"]
for name in sorted(stages, key=lambda name: order.index(name) if name in order else len(order)):
    print(f"  {name:<36} {stages[name]:7.1f} s")
print(f"  accepted {generate['committed_accepted']}, rejected {generate['committed_rejected']}, "
      f"quarantined {generate['committed_quarantined']}")
print(f"train    {wall['train']:7.1f} s  {train['steps']} optimizer steps on {train['rows']} rows "
      f"({train['deepspeed_config']}, {train['num_workers']} workers): Ray Train fit {train['seconds']:.1f} s, "
      f"the rest is Ray start, data and model save")
print(f"eval     {wall['eval']:7.1f} s  {evaluation['eval_inputs']} held-out inputs; engine start "
      f"{evaluation.get('engine_start_s', float('nan')):.1f} s; per system "
      + ", ".join(f"{name} {seconds * evaluation['eval_inputs']:.1f} s"
                  for name, seconds in evaluation["seconds_per_input"].items()))
print()
print("share of the job: " + ", ".join(f"{name} {seconds / total:.0%}" for name, seconds in wall.items()))
print(f"total demo job: {total:.1f} s ({total / 60:.1f} min)")
EOF
