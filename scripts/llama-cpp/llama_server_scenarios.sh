#!/usr/bin/env bash
# The tiny agent's scenarios through llama.cpp's real llama-server: builds llama-server (cached
# outside the clone, beside llama-bench), converts tests/fixtures/gpt-oss-tiny-agent to GGUF
# with tiny_agent_gguf.py, then runs tests/remote_llama.rs with OSSA_LLAMA_SERVER and
# OSSA_LLAMA_GGUF set, so its real_* tests run (`ossa run` and `ossa serve` over llama-server,
# and the misconfigured servers) besides the stub tests. See README.md in this folder.
# Not part of CI: building llama-server takes longer than CI's budget on 2 cores.
#
# --convert-only: only write the GGUF (when absent or older than the fixture or the converter);
# what tests/remote_llama.rs runs when it finds a llama-server but no model.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"

LLAMA_SERVER="${LLAMA_SERVER:-$LLAMA_BUILD/bin/llama-server}"
FIXTURE="$REPO/tests/fixtures/gpt-oss-tiny-agent"
GGUF="${GGUF:-$CACHE/gpt-oss-tiny-agent.gguf}"
LOG_DIR="${LOG_DIR:-$CACHE/llama-server-logs}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

convert_only=false
case "${1:-}" in
    --convert-only) convert_only=true ;;
    "") ;;
    *) die "unknown argument $1 (the only one is --convert-only)" ;;
esac

# Converted again whenever the fixture or the converter changes.
if [[ ! -f "$GGUF" || "$FIXTURE/model.safetensors" -nt "$GGUF" || "$HERE/tiny_agent_gguf.py" -nt "$GGUF" || "$HERE/make_gguf.py" -nt "$GGUF" ]]; then
    ensure_source
    py="$(python_with_numpy)"
    echo "== converting $FIXTURE to $GGUF" >&2
    mkdir -p "$(dirname "$GGUF")"
    PYTHONPATH="$LLAMA_SRC/gguf-py${PYTHONPATH:+:$PYTHONPATH}" "$py" "$HERE/tiny_agent_gguf.py" \
        --model "$FIXTURE" --out "$GGUF" >&2
fi
$convert_only && exit 0

if [[ ! -x "$LLAMA_SERVER" ]]; then
    ensure_llama_tools llama-server
fi

mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/scenarios-$(date +%Y%m%d-%H%M%S).log"
{
    echo "# llama_server_scenarios.sh: $LLAMA_SERVER ($("$LLAMA_SERVER" --version 2>&1 | grep -m1 version || echo '?'))"
    echo "# model $GGUF ($(stat -c %s "$GGUF") bytes), ossa $(git -C "$REPO" rev-parse --short HEAD)"
    echo "# loadavg $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cpus"
} | tee "$LOG"
cd "$REPO"
OSSA_LLAMA_SERVER="$LLAMA_SERVER" OSSA_LLAMA_GGUF="$GGUF" \
    cargo test --release --workspace --test remote_llama -- --nocapture --test-threads 1 2>&1 |
    tee -a "$LOG"
status="${PIPESTATUS[0]}"
echo "# loadavg after $(cut -d' ' -f1-3 /proc/loadavg); log: $LOG" | tee -a "$LOG"
exit "$status"
