#!/usr/bin/env bash
# Builds the wheels once and runs every test: Rust (cargo fmt/clippy/test, no Python needed), then
# Python against the wheels, installed with their test extras in a fresh virtual environment per
# interpreter: the whole suite on the default python3, core and stream layers on CPython 3.9,
# 3.10, 3.12 and 3.13 (each must be installed under pyenv; a missing one fails the run). There are
# two wheels from the same source: abi3 for CPython 3.10+ (METH_FASTCALL, see Cargo.toml) and
# abi3 for 3.9 alone (feature python39).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Rust: format, lint, unit tests"
cargo fmt --check
cargo clippy --all-targets -q -- -D warnings
cargo clippy --all-targets --features python -q -- -D warnings
cargo test -q

pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
interpreter() {  # the newest installed CPython X.Y, or fail: each claimed version must be tested
    local found
    found=$(ls -d "$pyenv_root"/versions/"$1".* 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$found" ] || [ ! -x "$found/bin/python" ]; then
        echo "CPython $1 is not installed under $pyenv_root/versions: cannot test the wheel on it" >&2
        exit 1
    fi
    echo "$found/bin/python"
}

echo "== Build the wheels: abi3 for CPython 3.10+ (maturin), abi3 for 3.9 (pip, through the backend)"
python3 -m pip install -q "maturin>=1.5,<2"
rm -rf dist
# maturin warns here that pyproject's build-backend is not maturin: it is maturin's, wrapped to
# pick the 3.9 feature on 3.9 (build_backend/backend.py), and pip builds through it below.
python3 -m maturin build --release -q --out dist
# Built as a user on 3.9 would build it, so the build backend's choice is tested too.
"$(interpreter 3.9)" -m pip wheel -q --no-deps -w dist .
wheel=$(ls dist/opencode_addons-*-cp310-abi3-*.whl)
wheel39=$(ls dist/opencode_addons-*-cp39-abi3-*.whl)
for built in "$wheel" "$wheel39"; do echo "built $built ($(du -h "$built" | cut -f1))"; done

# The fast string path reads the interpreter's object layout, so every CPython a wheel claims is
# tested, each in a fresh virtual environment with its wheel: the whole suite on the default
# interpreter, the core and stream layers on the others (to keep CI short).
wheel_for() {  # $1: python; prints the wheel built for it (pip refuses a wheel that does not fit)
    if "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))'; then
        echo "$wheel39"
    else
        echo "$wheel"
    fi
}

fresh_venv() {  # $1: python; prints the venv's directory
    local venv
    venv=$(mktemp -d)/venv
    "$1" -m venv "$venv"
    "$venv/bin/pip" install -q "$(wheel_for "$1")[test]" >&2
    echo "$venv"
}

run_pytest() {  # $1: venv, then the test paths; pytest's "no tests ran" counts as a failure
    local venv=$1 status
    shift
    # From a directory where `import opencode_addons` can only find the installed wheel.
    local workdir
    workdir=$(mktemp -d)
    cp -r tests pyproject.toml "$workdir/"
    set +e
    (cd "$workdir" && "$venv/bin/python" -m pytest "$@" -q -p no:randomly)
    status=$?
    set -e
    if [ "$status" -eq 5 ]; then
        echo "pytest ran no tests: that is a failure"
        return 1
    fi
    return "$status"
}

echo "== Fresh virtual environment (default python3) with the wheel and its test extras"
venv=$(fresh_venv python3)

echo "== Python lint, types, and the native stubs against the built module"
"$venv/bin/ruff" check python tests benches build_backend
"$venv/bin/ruff" format --check python tests benches build_backend
"$venv/bin/python" -m mypy python/opencode_addons build_backend --ignore-missing-imports
"$venv/bin/python" -m mypy.stubtest opencode_addons._core

echo "== Python tests, whole suite, $("$venv/bin/python" --version) (against the installed wheel)"
run_pytest "$venv" tests

for version in 3.9 3.10 3.12 3.13; do
    python=$(interpreter "$version")
    echo "== Python tests, core and stream layers, $("$python" --version)"
    run_pytest "$(fresh_venv "$python")" tests/core tests/stream
done
