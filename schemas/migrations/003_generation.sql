-- 003: what `curator generate` needs beyond the core tables: every attempt that did
-- not become a sample, and the provider batches it submitted.

-- Attempts that are not (or no longer) the sample itself: failed requests (with the
-- error class) and paid responses that a better one replaced (a truncated rationale
-- retried under --truncated retry). Paid tokens are never lost: their cost is here.
CREATE TABLE sample_attempts (
    attempt_id        VARCHAR PRIMARY KEY,   -- hash of (sample_id, request id or time)
    sample_id         VARCHAR NOT NULL,
    run_id            VARCHAR NOT NULL,
    problem_id        VARCHAR NOT NULL,
    sample_index      INTEGER NOT NULL,
    attempt           INTEGER,               -- 1 = first try of this sample in its job
    completion        VARCHAR,
    finish_reason     VARCHAR,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    cost_usd          DOUBLE,
    latency_ms        DOUBLE,
    error_class       VARCHAR,               -- rate_limit | server | timeout | connection | bad_response | content_filter | bad_request | auth | not_found | truncated
    error             VARCHAR,
    request_id        VARCHAR,
    endpoint          VARCHAR,
    created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One provider batch (OpenAI Batch API or Anthropic Message Batches).
CREATE TABLE batches (
    batch_id        VARCHAR PRIMARY KEY,     -- the provider's id
    run_id          VARCHAR NOT NULL,
    provider        VARCHAR NOT NULL,
    base_url        VARCHAR,
    status          VARCHAR NOT NULL,        -- the provider's status, as last seen
    input_file_id   VARCHAR,
    output_file_id  VARCHAR,
    error_file_id   VARCHAR,
    request_count   INTEGER NOT NULL,
    resubmission_of VARCHAR,                 -- batch whose failed items this one retries
    submitted_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    checked_at      TIMESTAMP,
    collected_at    TIMESTAMP,               -- set once its results are stored
    metadata        JSON
);

-- One request inside a batch: which samples it asks for.
CREATE TABLE batch_items (
    batch_id       VARCHAR NOT NULL,
    custom_id      VARCHAR NOT NULL,
    run_id         VARCHAR NOT NULL,
    problem_id     VARCHAR NOT NULL,
    sample_indexes INTEGER[] NOT NULL,
    status         VARCHAR NOT NULL,         -- submitted | succeeded | errored | expired | canceled | resubmitted
    error          VARCHAR,
    PRIMARY KEY (batch_id, custom_id)
);
