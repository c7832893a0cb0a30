# Sourced by compare.sh and llama_server_scenarios.sh: where llama.cpp's source and build live,
# how they are fetched and built, and a Python with numpy for the GGUF writers.
# Needs HERE (this folder) from the sourcing script.

# Ends the sourcing script with a message that names it.
die() { echo "$(basename "$0"): $*" >&2; exit 1; }

CACHE="${OSSA_CACHE:-$HOME/.cache/ossa}"

LLAMA_PY_VERSION=0.3.36
# Where the llama-cpp-python sdist (which vendors llama.cpp) is unpacked; fetched if absent.
LLAMA_SDIST_DIR="${LLAMA_SDIST_DIR:-$CACHE/llama-src}"
LLAMA_SRC="${LLAMA_SRC:-$LLAMA_SDIST_DIR/llama_cpp_python-$LLAMA_PY_VERSION/vendor/llama.cpp}"
# One build folder for both tools (llama-bench, llama-server), outside the clone.
LLAMA_BUILD="${LLAMA_BUILD:-$CACHE/llama.cpp-build}"

python_with_numpy() {
    if python3 -c 'import numpy, yaml' 2>/dev/null; then
        echo python3
        return
    fi
    local venv="$CACHE/gguf-venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "== creating $venv with numpy for the GGUF writers" >&2
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet "numpy>=2" pyyaml tqdm >&2
    fi
    echo "$venv/bin/python"
}

# The sdist straight from PyPI's simple index (JSON form), checked against the index's SHA-256.
# Not `pip download --no-binary`: that prepares the package's metadata, which builds its build
# dependencies (cmake among them) from source first.
ensure_source() {
    [[ -f "$LLAMA_SRC/CMakeLists.txt" ]] && return
    local name="llama_cpp_python-$LLAMA_PY_VERSION.tar.gz"
    local tarball="$LLAMA_SDIST_DIR/$name"
    echo "== llama.cpp source not at $LLAMA_SRC: fetching $name from PyPI"
    mkdir -p "$LLAMA_SDIST_DIR"
    if [[ ! -f "$tarball" ]]; then
        local url_and_sha
        url_and_sha="$(curl -fsSL -H 'Accept: application/vnd.pypi.simple.v1+json' \
            https://pypi.org/simple/llama-cpp-python/ | python3 -c '
import json, sys
name = sys.argv[1]
for f in json.load(sys.stdin)["files"]:
    if f["filename"] == name:
        print(f["url"], f["hashes"]["sha256"])
        break
else:
    sys.exit(f"{name} is not in the index")
' "$name")" || die "could not find $name on PyPI"
        curl -fsSL -o "$tarball.partial" "${url_and_sha% *}" || die "downloading $name failed"
        echo "${url_and_sha#* }  $tarball.partial" | sha256sum -c --quiet ||
            die "$name does not match PyPI's SHA-256"
        mv "$tarball.partial" "$tarball"
    fi
    tar -xzf "$tarball" -C "$LLAMA_SDIST_DIR"
    [[ -f "$LLAMA_SRC/CMakeLists.txt" ]] || die "no llama.cpp tree at $LLAMA_SRC after unpacking"
}

# Builds the llama.cpp tools named (llama-bench, llama-server) that $LLAMA_BUILD/bin lacks.
ensure_llama_tools() {
    local missing=()
    for tool in "$@"; do
        [[ -x "$LLAMA_BUILD/bin/$tool" ]] || missing+=("$tool")
    done
    ((${#missing[@]})) || return 0
    ensure_source
    command -v cmake >/dev/null || die "cmake not found (apt-get install cmake, or pip install cmake)"
    echo "== building ${missing[*]} in $LLAMA_BUILD (CPU only, Release, GGML_NATIVE=ON, no AMX)"
    # AMX off: this llama.cpp's AMX Q8_0 kernels die with SIGILL (ILL_ILLOPN on tilezero) when
    # built by GCC 12 on AMX Xeons: the tile config it loads is not valid (upstream PR #26954).
    # Everything else -march=native enables (AVX-512, VNNI, BF16) stays on.
    local no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cmake -S "$LLAMA_SRC" -B "$LLAMA_BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DGGML_CUDA=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF \
        "-DCMAKE_C_FLAGS=$no_amx" "-DCMAKE_CXX_FLAGS=$no_amx"
    nice -n 10 cmake --build "$LLAMA_BUILD" --target "${missing[@]}" -j "${BUILD_JOBS:-2}"
    for tool in "${missing[@]}"; do
        [[ -x "$LLAMA_BUILD/bin/$tool" ]] || die "build finished but $LLAMA_BUILD/bin/$tool is missing"
    done
}
