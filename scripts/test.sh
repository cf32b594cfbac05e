#!/usr/bin/env bash
# Builds the wheel once, installs it with the test extras into a fresh virtual environment, and
# runs every test: Rust (cargo fmt/clippy/test, no Python needed) and Python (pytest on the wheel).
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

echo "== Fresh virtual environment with the wheel and its test extras"
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q "${wheel}[test]"

echo "== Python lint, types, and the native stubs against the built module"
"$venv/bin/ruff" check python tests benches
"$venv/bin/ruff" format --check python tests benches
"$venv/bin/python" -m mypy python/opencode_addons --ignore-missing-imports
"$venv/bin/python" -m mypy.stubtest opencode_addons._core

echo "== Python tests (against the installed wheel, not the source tree)"
# Run from a directory where `import opencode_addons` can only find the installed wheel.
workdir=$(mktemp -d)
cp -r tests pyproject.toml "$workdir/"
cd "$workdir"
set +e
"$venv/bin/python" -m pytest tests -q -p no:randomly
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest ran no tests: that is a failure"
    exit 1
fi
exit "$status"
