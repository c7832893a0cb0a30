#!/usr/bin/env bash
# Same-run speed comparison: `ossa bench` vs llama.cpp's `llama-bench` on gpt-oss-20b shapes.
# See README.md in this folder. Takes the whole machine for ~10 minutes per round: run it
# when nothing else is running. QUICK=1 runs tiny sizes to check the plumbing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"

LLAMA_BENCH="${LLAMA_BENCH:-$LLAMA_BUILD/bin/llama-bench}"

OSSA="${OSSA:-$CACHE/target/release/ossa}"
MODEL_DIR="${MODEL_DIR:-$CACHE/gpt-oss-20b-random}"
GGUF="${GGUF:-${MODEL_DIR%/}.gguf}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-1}"
LOG_DIR="${LOG_DIR:-$CACHE/compare-logs}"
# Extra flags for each side, e.g. OSSA_ARGS="--dtype bf16", LLAMA_ARGS="-fa 1".
OSSA_ARGS="${OSSA_ARGS:-}"
LLAMA_ARGS="${LLAMA_ARGS:-}"

if [[ "${QUICK:-0}" == 1 ]]; then
    PROMPT=16 GEN=4 RUNS=1 DEPTH=32
else
    PROMPT="${PROMPT:-512}" GEN="${GEN:-128}" RUNS="${RUNS:-3}"
    # Prefill of PROMPT tokens after DEPTH cached ones (ossa's prefill_after_depth_tok_s against
    # llama-bench's `-p PROMPT -d DEPTH`), once per round: filling the cache takes minutes.
    DEPTH="${DEPTH:-4096}"
fi

ensure_llama_bench() {
    [[ -x "$LLAMA_BENCH" ]] && return
    ensure_llama_tools llama-bench
}

ensure_gguf() {
    [[ -f "$GGUF" ]] && return
    [[ -f "$MODEL_DIR/config.json" ]] || die "no $MODEL_DIR/config.json to take the shapes from"
    ensure_source
    local py
    py="$(python_with_numpy)"
    echo "== writing $GGUF (about 12 GB)"
    PYTHONPATH="$LLAMA_SRC/gguf-py${PYTHONPATH:+:$PYTHONPATH}" nice -n 10 "$py" "$HERE/make_gguf.py" \
        --config "$MODEL_DIR/config.json" --out "$GGUF"
}

[[ -x "$OSSA" ]] || die "no ossa binary at $OSSA (cargo build --release, CARGO_TARGET_DIR=$CACHE/target)"
if [[ ! -f "$MODEL_DIR/config.json" ]]; then
    echo "== writing a random gpt-oss-20b checkpoint to $MODEL_DIR (13 GB)"
    "$OSSA" dev random-checkpoint --preset gpt-oss-20b --out "$MODEL_DIR"
fi
ensure_llama_bench
ensure_gguf

mkdir -p "$LOG_DIR"
STAMP="$(date +%Y%m%d-%H%M%S)"
LOG="$LOG_DIR/compare-$STAMP.log"
RESULTS="$LOG_DIR/compare-$STAMP.jsonl"
: >"$RESULTS"
LAST_CPU=$((THREADS - 1))

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Each run appends one JSON line {engine, round, loadavg_before, loadavg_after, report} to RESULTS.
run_ossa() {
    local round=$1 before after out
    before="$(loadavg)"
    # ossa has no thread pinning of its own: restrict it to the same cores llama.cpp binds to.
    # shellcheck disable=SC2086
    out="$(taskset -c "0-$LAST_CPU" "$OSSA" bench --model "$MODEL_DIR" --threads "$THREADS" \
        --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --runs "$RUNS" --depth 0 \
        --long-prompt "$DEPTH" --json $OSSA_ARGS \
        2>>"$LOG")" || die "ossa bench failed (exit $?), see $LOG"
    after="$(loadavg)"
    printf '{"engine":"ossa","round":%d,"loadavg_before":"%s","loadavg_after":"%s","report":%s}\n' \
        "$round" "$before" "$after" "$out" >>"$RESULTS"
    echo "ossa round $round: loadavg $before -> $after" | tee -a "$LOG"
}

run_llama() {
    local round=$1 before after out
    before="$(loadavg)"
    # shellcheck disable=SC2086
    out="$(OMP_PROC_BIND=true OMP_PLACES=cores taskset -c "0-$LAST_CPU" "$LLAMA_BENCH" -m "$GGUF" \
        -t "$THREADS" -p "$PROMPT" -n "$GEN" -r "$RUNS" -lm dio -o json $LLAMA_ARGS 2>>"$LOG")" ||
        die "llama-bench failed (exit $?), see $LOG"
    if ((DEPTH > 0)); then
        # shellcheck disable=SC2086
        deep="$(OMP_PROC_BIND=true OMP_PLACES=cores taskset -c "0-$LAST_CPU" "$LLAMA_BENCH" -m "$GGUF" \
            -t "$THREADS" -p "$PROMPT" -n 0 -d "$DEPTH" -r 1 -lm dio -o json $LLAMA_ARGS 2>>"$LOG")" ||
            die "llama-bench at depth $DEPTH failed (exit $?), see $LOG"
    else
        deep="[]"
    fi
    after="$(loadavg)"
    # llama-bench prints a multi-line JSON array: fold both onto one line.
    out="$(python3 -c 'import json,sys; a, b = sys.argv[1:]; print(json.dumps(json.loads(a) + json.loads(b)))' "$out" "$deep")"
    printf '{"engine":"llama.cpp","round":%d,"loadavg_before":"%s","loadavg_after":"%s","report":%s}\n' \
        "$round" "$before" "$after" "$out" >>"$RESULTS"
    echo "llama.cpp round $round: loadavg $before -> $after" | tee -a "$LOG"
}

{
    echo "# compare.sh $STAMP: prompt $PROMPT, gen $GEN, runs $RUNS, depth $DEPTH, threads $THREADS, rounds $ROUNDS"
    echo "# ossa $OSSA ($("$OSSA" --version 2>/dev/null || echo '?')) on $MODEL_DIR $OSSA_ARGS"
    echo "# llama-bench $LLAMA_BENCH on $GGUF $LLAMA_ARGS"
    echo "# $(grep -m1 'model name' /proc/cpuinfo), $(nproc) cpus"
} | tee "$LOG"

for ((round = 1; round <= ROUNDS; round++)); do
    # Alternate who goes first so drift in machine load does not favour one side.
    if ((round % 2 == 1)); then
        run_ossa "$round"
        run_llama "$round"
    else
        run_llama "$round"
        run_ossa "$round"
    fi
done

python3 - "$RESULTS" "$PROMPT" "$GEN" "$DEPTH" <<'EOF' | tee -a "$LOG"
import json, statistics, sys

path, prompt, gen, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(line) for line in open(path) if line.strip()]

def figures(row):
    r = row["report"]
    if row["engine"] == "ossa":
        return r["prefill_tok_s_runs"], r["decode_depth0_tok_s_runs"]
    pp = [t["samples_ts"] for t in r if t["n_prompt"] > 0 and t["n_gen"] == 0 and not t.get("n_depth")]
    tg = [t["samples_ts"] for t in r if t["n_gen"] > 0 and t["n_prompt"] == 0]
    return (pp[0] if pp else []), (tg[0] if tg else [])

med = lambda xs: statistics.median(xs) if xs else float("nan")
samples = {"ossa": ([], []), "llama.cpp": ([], [])}
print()
print(f"{'engine':<10} {'round':>5} {'prefill tok/s':>14} {'decode tok/s':>13}  loadavg before -> after")
for row in rows:
    pp, tg = figures(row)
    samples[row["engine"]][0].extend(pp)
    samples[row["engine"]][1].extend(tg)
    print(f"{row['engine']:<10} {row['round']:>5} {med(pp):>14.2f} {med(tg):>13.2f}  "
          f"{row['loadavg_before']} -> {row['loadavg_after']}")
o, l = samples["ossa"], samples["llama.cpp"]
print()
print(f"medians over all samples (prefill {prompt} tokens; decode {gen} tokens from an empty cache)")
print(f"{'':<10} {'prefill tok/s':>14} {'decode tok/s':>13}")
print(f"{'ossa':<10} {med(o[0]):>14.2f} {med(o[1]):>13.2f}")
print(f"{'llama.cpp':<10} {med(l[0]):>14.2f} {med(l[1]):>13.2f}")
print(f"{'ratio':<10} {med(o[0]) / med(l[0]):>14.3f} {med(o[1]) / med(l[1]):>13.3f}   (ossa / llama.cpp)")

if depth > 0:
    ossa_deep = [row["report"].get("prefill_after_depth_tok_s") for row in rows if row["engine"] == "ossa"]
    llama_deep = [t["avg_ts"] for row in rows if row["engine"] == "llama.cpp"
                  for t in row["report"] if t.get("n_depth") == depth and t["n_gen"] == 0]
    ossa_deep = [x for x in ossa_deep if x is not None]
    print()
    print(f"prefill of {prompt} tokens after {depth} cached (one run per round)")
    print(f"{'ossa':<10} {med(ossa_deep):>14.2f}   runs {ossa_deep}")
    print(f"{'llama.cpp':<10} {med(llama_deep):>14.2f}   runs {llama_deep}")
    print(f"{'ratio':<10} {med(ossa_deep) / med(llama_deep):>14.3f}")

print()
print("ossa's own figures (medians over rounds)")
for key in ["isa", "decode_depth0_tok_s_by_quarter", "prefill_long_tok_s", "decode_floor_tok_s", "decode_floor_fraction",
            "read_bandwidth_gb_s", "read_bandwidth_gb_s_min", "read_bandwidth_gb_s_max",
            "read_bandwidth_after_decode_gb_s", "decode_floor_fraction_after_decode",
            "read_bandwidth_during_decode_gb_s", "read_bandwidth_during_decode_gb_s_min",
            "read_bandwidth_during_decode_gb_s_max", "decode_floor_during_decode_tok_s",
            "decode_floor_fraction_during_decode",
            "ttft_cold_s", "ttft_cached_s", "ttft_cold_from_load_s", "ttft_cached_from_load_s",
            "peak_rss_bytes", "load_s"]:
    values = [row["report"].get(key) for row in rows if row["engine"] == "ossa"]
    values = [v for v in values if v is not None]
    if not values:
        continue
    if isinstance(values[0], str):
        shown = values[0]
    elif isinstance(values[0], list):
        # Per round: e.g. decode tok/s over each quarter of the generated tokens.
        shown = "; ".join(", ".join(f"{v:.2f}" for v in vs if v is not None) for vs in values)
    else:
        shown = f"{med(values):.3f}"
    print(f"  {key:<24} {shown}")
EOF
echo "raw JSON: $RESULTS   log: $LOG"
