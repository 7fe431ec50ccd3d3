#!/usr/bin/env bash
# Runs wafer's side-by-side benchmark and writes bench/results/latest.md. Pass --quick for short runs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run -p bench --release -- "$@"
