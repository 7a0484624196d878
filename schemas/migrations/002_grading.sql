-- 002: how the grader found each verdict's answer (boxed, phrase, hashes, bare,
-- last-math, ...), next to the rule that decided it, for debugging extraction.
ALTER TABLE grades ADD COLUMN extraction VARCHAR;
