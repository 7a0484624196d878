#!/usr/bin/env bash
# The main job, end to end, on the embedded default: no API key, no GPU, no network.
# Run it with `make demo` (which installs .venv first). Everything lands in demo-out/.
#
# curation: load problems -> a teacher run through the real OpenAI client against the
# local teacher server -> a second teacher run imported -> grade -> stats and SQL on the
# failures -> export training splits and eval problems -> HTML report;
# distillation: tiny model -> NAT -> NCE -> the student evaluated into the warehouse (a run
# graded like a teacher's, one `evaluations` row per voting rule) -> the paper's comparison
# table (distill compare), its students side by side with their teacher in SQL;
# a student that learns: a small base pre-trained from scratch, synthetic subtraction
# problems, a programmatic teacher through `curator generate`, and the table of the
# untrained base and CoT KD on held-out problems, evaluated into the warehouse
# (docs/synthetic.md).
#
# Steps 6-7 use a random 2-layer model and a dozen optimiser steps on MATH, so their
# accuracies are zero: they show the mechanics of a real run. Step 8 is a one-seed, short
# version of the experiment of docs/experiments.md, where the trained students do learn.
set -Eeuo pipefail
trap 'echo "demo: failed (exit $?) at scripts/demo.sh line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
OUT=demo-out
rm -rf "$OUT"
mkdir -p "$OUT"
export CURATOR_DB="$OUT/curator.duckdb"
DEMO=curator/demo
K=4                      # teacher rationales per train problem
export CUDA_VISIBLE_DEVICES=""   # CPU, even on a machine with a GPU: same numbers everywhere
# A 2-layer, 64-wide model gains nothing from intra-op threads, and on a small shared
# machine torch's spinning OpenMP threads made sampling 5-10x slower; one thread is steady.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export TQDM_DISABLE="${TQDM_DISABLE:-1}"      # no per-step progress bars in the transcript
START=$SECONDS
step() { printf '\n\033[1m== %s\033[0m  (%ss)\n' "$*" "$((SECONDS - START))"; }
show() {  # print a command the way it could be typed (arguments quoted where needed)
    local a line="$"
    for a in "$@"; do
        if [[ $a =~ ^[][A-Za-z0-9_./:=,@+%-]+$ ]]; then line+=" $a"; else line+=" '${a//\'/\'\\\'\'}'"; fi
    done
    printf '%s\n' "$line"
}
run() {   # echo a command, run it, stop the demo with what failed if it fails
    show "$@"
    "$@" || { local rc=$?; echo "demo: failed (exit $rc): $*" >&2; exit "$rc"; }
}

step "1. Create the warehouse and load problems (200 MATH train, 70 MATH test)"
run curator init
run curator load math "$DEMO/math_train_200.jsonl"
run curator load math "$DEMO/math_test_70.jsonl"

step "2. Teacher run: $K rationales per train problem from the local teacher server"
# The server replays the GPT-4 rationales of the TDG release by question; the real openai
# client talks to it over HTTP on 127.0.0.1. Port 0 lets the OS pick a free port, which
# the server writes to --port-file once it listens.
SERVE=(curator serve --replay "$DEMO/tdg_gpt4_200.jsonl.gz" --port 0
       --port-file "$OUT/server.url" --log "$OUT/server-requests.jsonl")
printf '%s &\n' "$(show "${SERVE[@]}")"
"${SERVE[@]}" >"$OUT/server.log" 2>&1 &   # not through run(): $! must be the server itself
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    [[ -s "$OUT/server.url" ]] && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$OUT/server.log"; echo "demo: the teacher server did not start" >&2; exit 1; }
    sleep 0.1
done
[[ -s "$OUT/server.url" ]] || { echo "demo: the teacher server did not listen within 30 s" >&2; exit 1; }
URL=$(cat "$OUT/server.url")
cat "$OUT/server.log"
export CURATOR_API_KEY=demo-no-key-needed   # the local server checks none; real ones do
run curator generate --provider openai-compatible --base-url "$URL/v1" --model gpt-4 \
    --dataset math --split train --samples "$K" --grade --quiet
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; trap - EXIT
echo "teacher server stopped; $(wc -l <"$OUT/server-requests.jsonl") requests logged in $OUT/server-requests.jsonl"

step "3. A second teacher run: the released rationales imported as they are (8 per problem)"
run curator import tdg "$DEMO/tdg_gpt4_200.jsonl.gz" --model gpt-4

step "4. Grade what is not graded yet, then look at the warehouse"
run curator grade --quiet
run curator check '\frac{1}{2}' 'so the answer is $\boxed{0.5}$.'   # how one verdict is reached
run curator stats
run curator sql "SELECT teacher, grade_status, count(*) AS negatives, count(DISTINCT problem_id) AS problems
                 FROM failure_chains GROUP BY ALL ORDER BY teacher, negatives DESC" -f markdown
run curator sql "SELECT subject, count(*) AS hard_problems FROM hard_problems GROUP BY 1 ORDER BY 2 DESC" -f markdown

step "5. Export training splits and the 70 test problems; HTML report"
run curator export "$OUT/export" --splits train=0.9,validation=0.1
run curator export-eval "$OUT/eval" --dataset math --split test
run curator report "$OUT/report.html"

step "6. Students: a tiny model, NAT, NCE, evaluated into the warehouse like a teacher's run"
TRAIN=(--epochs 1 --max-steps 8 --batch-size 4 --max-length 256 --lr 5e-3 --logging-steps 4 --device cpu)
run distill init-tiny "$OUT/tiny-model"
run distill nat --base "$OUT/tiny-model" --data "$OUT/export" --out "$OUT/nat" "${TRAIN[@]}" --gate-width 32
run distill nce --base "$OUT/tiny-model" --data "$OUT/export" --nat "$OUT/nat" --out "$OUT/nce" "${TRAIN[@]}"
# distill eval stores the student's rationales in the warehouse ($CURATOR_DB) as a run of
# kind student, grades them with the teachers' grader, and writes each voting rule's
# accuracy with its 95% interval into `evaluations` (docs/evaluations.md).
run distill eval --base "$OUT/tiny-model" --adapter "$OUT/nce" --data "$OUT/eval" \
    --samples 2 --max-new-tokens 48 --temperature 0.7 --device cpu --out "$OUT/student-eval"
# Teachers answered the train problems, the student the test ones: the same grader, the
# same views, one query.
run curator sql "SELECT model, kind, samples, graded, positives, negatives,
                        round(pass_rate, 3) AS pass_rate
                 FROM run_stats ORDER BY pass_rate DESC, model" -f markdown
run curator sql "SELECT rule, eval_split, n, correct, round(accuracy, 3) AS accuracy,
                        round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high
                 FROM evaluations ORDER BY rule" -f markdown

step "7. The paper's comparison table on the demo export (distill compare)"
run distill compare --config distill/configs/demo-compare.toml
# Every student of the comparison (comparison id 'demo') beside the two teacher runs of its
# training export (generated and imported); their rows are empty because the teachers never
# answered the test problems.
run curator sql "SELECT role, label, rule, n, round(accuracy, 3) AS accuracy,
                        round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high
                 FROM method_comparison WHERE comparison_id = 'demo'
                   AND rule IN ('teacher-samples', 'asc:s') ORDER BY role DESC, label" -f markdown

step "8. A student that learns: synthetic subtraction, a base pre-trained from scratch (distill compare)"
# Pre-train a 0.7M Llama on column addition (a few minutes), load 150 train and 100 test
# subtraction problems into this warehouse, 4 rationales per train problem from the
# programmatic teacher (curator serve --teacher synthetic, through curator generate),
# grade, export, train CoT KD, evaluate it and the untrained base (one seed: KD 49%, the
# base 0%, when this was written; every method over three seeds: docs/experiments.md).
run distill compare --config distill/configs/demo-synthetic.toml
run curator sql "SELECT label, rule, n, round(accuracy, 3) AS accuracy, round(ci_low, 3) AS ci_low,
                        round(ci_high, 3) AS ci_high
                 FROM method_comparison WHERE comparison_id = 'demo-synthetic'
                   AND rule = 'greedy' ORDER BY role DESC, label" -f markdown

step "done in $((SECONDS - START)) s: everything is in $OUT/ (report: $OUT/report.html, tables: $OUT/compare/comparison.md, $OUT/synthetic/comparison.md)"
