#!/usr/bin/env bash
# Builds the wheel once and runs every test: Rust (cargo fmt/clippy/test, no Python needed), then
# Python against that one abi3 wheel installed with its test extras in a fresh virtual environment
# per interpreter: the whole suite on the default python3, core and stream layers on CPython 3.9,
# 3.10, 3.12 and 3.13 (each must be installed under pyenv; a missing one fails the run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Rust: format, lint, unit tests"
cargo fmt --check
cargo clippy --all-targets -q -- -D warnings
cargo clippy --all-targets --features python -q -- -D warnings
cargo test -q

echo "== Build the abi3 wheel"
python3 -m pip install -q "maturin>=1.5,<2"
rm -rf dist
python3 -m maturin build --release -q --out dist
wheel=$(ls dist/opencode_addons-*.whl)
echo "built $wheel ($(du -h "$wheel" | cut -f1))"

# The fast string path reads the interpreter's object layout, so every CPython the abi3 wheel
# claims is tested, each in a fresh virtual environment with the same wheel: the whole suite on
# the default interpreter, the core and stream layers on the others (to keep CI short).
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

fresh_venv() {  # $1: python; prints the venv's directory
    local venv
    venv=$(mktemp -d)/venv
    "$1" -m venv "$venv"
    "$venv/bin/pip" install -q "${wheel}[test]" >&2
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
"$venv/bin/ruff" check python tests benches
"$venv/bin/ruff" format --check python tests benches
"$venv/bin/python" -m mypy python/opencode_addons --ignore-missing-imports
"$venv/bin/python" -m mypy.stubtest opencode_addons._core

echo "== Python tests, whole suite, $("$venv/bin/python" --version) (against the installed wheel)"
run_pytest "$venv" tests

for version in 3.9 3.10 3.12 3.13; do
    python=$(interpreter "$version")
    echo "== Python tests, core and stream layers, $("$python" --version)"
    run_pytest "$(fresh_venv "$python")" tests/core tests/stream
done
