#!/usr/bin/env bash
# The one device call of runbooks/performance.md: the peer baseline and unigen's training step side by side
# on one GPU, every batch size, the ablation of each switch, the ratio table. Run from the repo root, on the
# device machine, with .whl/ and .bench/ carried (the runbook says how to fill them). Extra arguments go to
# bench/train_step.py (e.g. --compile). Results: $OUT/train_step.json (written after every phase, so a run
# stopped at its time limit keeps what it measured) and $OUT/train_step.log. BENCH_TIMEOUT_S bounds the bench
# (default 540 s, inside the device tool's 600 s per command).
set -uo pipefail
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
# Default: baseline + both rows + ablation. NO_BASELINE=1 skips the baseline (e.g. a second, --compile run).
# NO_ABLATE=1 skips the ablation.
baseline=(--baseline .bench/peer_metaquery_step.py)
[ "${NO_BASELINE:-0}" = 1 ] && baseline=()
ablate=(--ablate --ablate-steps 4)
[ "${NO_ABLATE:-0}" = 1 ] && ablate=()
timeout "${BENCH_TIMEOUT_S:-540}" python3 bench/train_step.py "${ablate[@]}" "${baseline[@]}" \
  --json "$OUT/train_step.json" "$@" 2>&1 \
  | grep -v -e "UserWarning" -e "return torch.rms_norm" -e "warnings.warn" | tee "$OUT/train_step.log"
