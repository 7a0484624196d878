-- 001: the warehouse's core tables. Table and column names are a contract that the
-- grader, the generator, the exporter and users' own SQL rely on: add, never rename.

-- One row per problem. problem_id is a content hash of (dataset, split, source_id), so
-- loading the same file twice adds nothing, and duplicate question texts inside a
-- dataset (MultiArith has 20) stay distinct problems.
CREATE TABLE problems (
    problem_id         VARCHAR PRIMARY KEY,
    dataset            VARCHAR NOT NULL,
    split              VARCHAR NOT NULL,
    subject            VARCHAR,
    level              INTEGER,
    question           VARCHAR NOT NULL,
    -- normalised question text (prompt labels, Unicode form and whitespace folded);
    -- imported rationales are linked to problems through it
    question_key       VARCHAR NOT NULL,
    reference_solution VARCHAR,
    -- the reference final answer as the grader compares it; several accepted answers
    -- (ASDiv) are kept in reference_answers and joined with '; ' here
    reference_answer   VARCHAR,
    reference_answers  VARCHAR[],
    source_id          VARCHAR NOT NULL,
    source_path        VARCHAR,
    source_position    INTEGER,
    metadata           JSON,
    created_at         TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Rendered prompt templates, stored by content hash so every sample can be traced to
-- the exact prompt that produced it.
CREATE TABLE prompts (
    prompt_id  VARCHAR PRIMARY KEY,
    name       VARCHAR,
    template   VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One teacher (or student) run. run_id is deterministic: re-running the same generate
-- command or re-importing the same file resumes the same run.
CREATE TABLE runs (
    run_id      VARCHAR PRIMARY KEY,
    kind        VARCHAR NOT NULL,          -- 'generate' | 'import'
    provider    VARCHAR,
    model       VARCHAR NOT NULL,
    prompt_id   VARCHAR,
    params      JSON,                      -- sampling parameters
    source      VARCHAR,                   -- imported file, when kind = 'import'
    metadata    JSON,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One rationale. sample_id is a hash of (run_id, problem_id, sample_index).
CREATE TABLE samples (
    sample_id         VARCHAR PRIMARY KEY,
    run_id            VARCHAR NOT NULL,
    problem_id        VARCHAR NOT NULL,
    sample_index      INTEGER NOT NULL,
    completion        VARCHAR,             -- NULL when the request failed
    finish_reason     VARCHAR,             -- 'stop' | 'length' | 'content_filter' | ...
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    cost_usd          DOUBLE,
    latency_ms        DOUBLE,
    error_class       VARCHAR,             -- rate_limit | server | timeout | bad_response | content_filter | ...
    error             VARCHAR,
    request_id        VARCHAR,
    metadata          JSON,                -- extra per-sample fields (e.g. a student's logprob)
    created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Every grader version that has graded anything; the newest one decides the
-- positives/negatives views.
CREATE TABLE grader_versions (
    grader_version VARCHAR PRIMARY KEY,
    registered_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One verdict per (sample, grader version): a better grader regrades without
-- regenerating and without losing the old verdicts.
CREATE TABLE grades (
    sample_id      VARCHAR NOT NULL,
    grader_version VARCHAR NOT NULL,
    correct        BOOLEAN NOT NULL,
    status         VARCHAR NOT NULL,       -- correct | wrong | no_answer | unparseable | timeout
    extracted      VARCHAR,
    normalized     VARCHAR,
    rule           VARCHAR,
    graded_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (sample_id, grader_version)
);
