-- 004: one row per finished `curator export` / `curator export-eval`, so that reports
-- and users can see what was handed to training, from which selection, and check a
-- directory against its manifest. The manifest.json in the export directory is the
-- full record; this table keeps the parts worth querying.
CREATE TABLE exports (
    export_id       VARCHAR PRIMARY KEY,
    kind            VARCHAR NOT NULL,      -- 'training' | 'eval'
    out_path        VARCHAR NOT NULL,      -- absolute path of the export directory
    format          VARCHAR NOT NULL,      -- 'jsonl' | 'parquet' | 'hf'
    seed            BIGINT,
    selection       JSON NOT NULL,         -- options, runs, grader version, SQL query
    totals          JSON NOT NULL,         -- per split: problems, records, positive, negative
    counts          JSON,                  -- per split x label x subject
    grader_version  VARCHAR,
    manifest_sha256 VARCHAR NOT NULL,
    -- hash over the data files' hashes: equal for two exports with identical data
    data_sha256     VARCHAR NOT NULL,
    tool_version    VARCHAR,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
);
