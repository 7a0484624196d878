#!/usr/bin/env bash
# The main job, end to end, on the embedded default: no API key, no GPU, no network.
# Run it with `make demo` (which installs .venv first). Everything lands in demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=demo-out
rm -rf "$OUT"
mkdir -p "$OUT"
export CURATOR_DB="$OUT/curator.duckdb"
DEMO=curator/demo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Create the warehouse and load problems (200 MATH train, 70 MATH test)"
curator init
curator load math "$DEMO/math_train_200.jsonl"
curator load math "$DEMO/math_test_70.jsonl"

step "2. Import released teacher rationales (GPT-4, 8 per problem) as a run"
curator import tdg "$DEMO/tdg_gpt4_200.jsonl.gz" --model gpt-4

step "3. What is in the warehouse"
curator stats
curator sql "SELECT subject, count(*) AS problems FROM problems WHERE split = 'train' GROUP BY 1 ORDER BY 2 DESC" -f markdown
