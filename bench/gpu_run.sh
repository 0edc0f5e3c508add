#!/usr/bin/env bash
# The one device call of runbooks/performance.md: the peer baseline and unigen's training step side by side
# on one GPU, every batch size, the ablation of each switch, the ratio table; then, in the time left, the
# torch row again at the largest batch with model.compile_blocks (regional torch.compile), its ratio taken
# against the baseline rows the first run measured. Run from the repo root, on the device machine, with
# .whl/ and .bench/ carried (the runbook says how to fill them). Extra arguments go to the first
# bench/train_step.py run. Results: $OUT/train_step.json (rewritten after every phase, so a run stopped at
# its time limit keeps what it measured), $OUT/train_step.log, and $OUT/train_step_compile.{json,log}.
# BENCH_TIMEOUT_S bounds the whole script from its start, install included (default 570 s, inside the
# device tool's 600 s per command); the compile run starts only with COMPILE_MIN_S (default 150 s) left.
# NO_BASELINE=1 skips the baseline, NO_ABLATE=1 the ablation, NO_COMPILE=1 the compile run.
set -uo pipefail
start=$SECONDS
budget=${BENCH_TIMEOUT_S:-570}
left() { echo $(( budget - (SECONDS - start) )); }
OUT=${OUT:-/tmp/unigen-bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TORCH_CUDA_ARCH_LIST=9.0
site=/tmp/site
[ -f .bench/peer_metaquery_step.py ] || { echo "error: .bench/peer_metaquery_step.py missing: copy ../shared/bench/peer_metaquery_step.py there and carry .bench"; exit 2; }
ls .whl/diffusers-*.whl .whl/deepspeed-*.tar.gz >/dev/null || { echo "error: .whl/ lacks diffusers/deepspeed: run ../shared/tools/gpu-wheels.sh and carry .whl"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl || exit 1
DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" .whl/deepspeed-*.tar.gz || exit 1
# unigen is a namespace of two mapped folders (pyproject package-dir): link them instead of installing.
mkdir -p /tmp/shim/unigen
ln -sfn "$PWD/model" /tmp/shim/unigen/model
ln -sfn "$PWD/orchestrator" /tmp/shim/unigen/orchestrator
export PYTHONPATH="/tmp/shim:$site"
# A carried transformers whose pinned dependencies the image does not meet: fall back to the image's own.
if ! python3 -c "import transformers" 2>"$OUT/transformers-import.err"; then
  echo "note: carried transformers does not import here ($(tail -1 "$OUT/transformers-import.err")); using the image's"
  rm -rf "$site"/transformers "$site"/transformers-*.dist-info
fi
python3 -c "import torch, transformers, diffusers, deepspeed; print('versions: torch', torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__, 'deepspeed', deepspeed.__version__)" 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
baseline=(--baseline .bench/peer_metaquery_step.py)
[ "${NO_BASELINE:-0}" = 1 ] && baseline=()
ablate=(--ablate --ablate-steps 4)
[ "${NO_ABLATE:-0}" = 1 ] && ablate=()
quiet() { grep -v -e "UserWarning" -e "return torch.rms_norm" -e "warnings.warn"; }
timeout "$(left)" python3 bench/train_step.py "${ablate[@]}" "${baseline[@]}" \
  --json "$OUT/train_step.json" "$@" 2>&1 | quiet | tee "$OUT/train_step.log"
status=${PIPESTATUS[0]}
# The compile run: the torch row at the largest batch the first run measured, with the checkpointing that
# batch needed there (no OOM retry under compilation), compile_blocks on, no FlopCounterMode check (a
# dispatch mode over dynamo), the baseline's rows reused from the first run.
read -r largest ckpt < <(python3 - "$OUT/train_step.json" 2>/dev/null <<'PY' || echo "0 none"
import json, sys
rows = [r for r in json.load(open(sys.argv[1]))["unigen"] if r.get("row") == "unigen torch" and "samples_per_s" in r]
top = max(rows, key=lambda r: r["batch"]) if rows else {"batch": 0, "ckpt": []}
print(top["batch"], ",".join(top.get("ckpt") or []) or "none")
PY
)
small=(); [[ " $* " == *" --small "* ]] && small=(--small)
from=(); [ "${NO_BASELINE:-0}" = 1 ] || from=(--baseline-from "$OUT/train_step.json")
if [ "${NO_COMPILE:-0}" = 1 ] || [ "$largest" = 0 ]; then
  echo "compile run: skipped (NO_COMPILE=1, or the first run measured no torch row)"
elif [ "$(left)" -lt "${COMPILE_MIN_S:-150}" ]; then
  echo "compile run: skipped, $(left) s left of BENCH_TIMEOUT_S=$budget (needs COMPILE_MIN_S=${COMPILE_MIN_S:-150})"
else
  echo "compile run: batch $largest, checkpointing $ckpt, $(left) s left"
  timeout "$(left)" python3 bench/train_step.py --compile --rows torch --batches "$largest" --ckpt "$ckpt" --no-count \
    "${small[@]}" "${from[@]}" --json "$OUT/train_step_compile.json" 2>&1 | quiet | tee "$OUT/train_step_compile.log"
fi
exit "$status"
