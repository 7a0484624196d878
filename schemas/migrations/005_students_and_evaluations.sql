-- 005: students in the warehouse, and what must never reach a training export.

-- Who wrote a run's samples: 'teacher' (rationales to learn from) or 'student' (a
-- trained model being evaluated). `curator export` takes teacher runs only unless the
-- user names student runs in --runs. Runs written before this migration are classified
-- by the rule the run_roles view also applies to a NULL role: kind 'student', or a
-- model name starting with 'student:' or 'base:' (the names `distill eval` writes into
-- samples.jsonl), is a student.
ALTER TABLE runs ADD COLUMN role VARCHAR;
UPDATE runs SET role = CASE WHEN kind = 'student' OR starts_with(model, 'student:')
                            OR starts_with(model, 'base:')
                            THEN 'student' ELSE 'teacher' END;

-- Every problem a `curator export-eval` has written, so that no later training export
-- puts it into a training split (unless --allow-eval-problems).
CREATE TABLE eval_export_problems (
    export_id  VARCHAR NOT NULL,           -- exports.export_id of the eval export
    problem_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (export_id, problem_id)
);

-- One result per (student run, eval dataset, eval split, voting rule, comparison):
-- written by curator.evaluations.record_evaluation (called by `distill eval` /
-- `distill compare`). correct may be fractional (a tied vote earns partial credit);
-- accuracy = correct / n, [ci_low, ci_high] its 95% Wilson score interval.
CREATE TABLE evaluations (
    run_id         VARCHAR NOT NULL,
    eval_dataset   VARCHAR NOT NULL,
    eval_split     VARCHAR NOT NULL,
    rule           VARCHAR NOT NULL,       -- voting rule, e.g. 'greedy', 'majority'
    comparison_id  VARCHAR NOT NULL DEFAULT '',  -- '' = not part of a comparison
    label          VARCHAR,                -- how the comparison names this student
    n              INTEGER NOT NULL,
    correct        DOUBLE NOT NULL,
    accuracy       DOUBLE,
    ci_low         DOUBLE,
    ci_high        DOUBLE,
    grader_version VARCHAR NOT NULL,
    metadata       JSON,
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, eval_dataset, eval_split, rule, comparison_id)
);
