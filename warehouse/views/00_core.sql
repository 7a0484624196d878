-- Named views over the warehouse, re-created whenever this file changes.

-- The grader version whose verdicts count: the newest registered one.
CREATE OR REPLACE VIEW current_grader AS
SELECT grader_version FROM grader_versions
ORDER BY registered_at DESC, grader_version DESC
LIMIT 1;

-- The current grader's verdicts: at most one per sample.
CREATE OR REPLACE VIEW current_grades AS
SELECT * FROM grades
WHERE grader_version = (SELECT grader_version FROM current_grader);

-- Every run with its role: 'teacher' or 'student'. A run written by code that does not
-- set runs.role is classified as migration 005 classified the old ones: kind 'student'
-- or a model name starting with 'student:' or 'base:' is a student, everything else
-- a teacher.
CREATE OR REPLACE VIEW run_roles AS
SELECT run_id, kind, model,
       coalesce(role, CASE WHEN kind = 'student' OR starts_with(model, 'student:')
                           OR starts_with(model, 'base:')
                           THEN 'student' ELSE 'teacher' END) AS role
FROM runs;

-- Samples with their verdict by the current grader (graded samples only).
CREATE OR REPLACE VIEW graded_samples AS
SELECT s.*, g.grader_version, g.correct, g.status AS grade_status,
       g.extracted AS extracted_answer, g.normalized AS normalized_answer, g.rule AS grade_rule
FROM samples s
JOIN current_grades g ON g.sample_id = s.sample_id;

CREATE OR REPLACE VIEW positives AS
SELECT * FROM graded_samples WHERE correct;

CREATE OR REPLACE VIEW negatives AS
SELECT * FROM graded_samples WHERE NOT correct;

-- One row per problem: how many rationales its teachers wrote and how many are right.
-- Student runs (`distill eval`, `distill compare`) are evaluations, not data about the
-- problem: they are left out here and counted in run_stats and `evaluations`.
CREATE OR REPLACE VIEW problem_stats AS
SELECT p.problem_id, p.dataset, p.split, p.subject, p.level,
       count(s.sample_id)                                   AS samples,
       count(s.completion)                                  AS completions,
       count(s.error_class)                                 AS errors,
       count(g.sample_id)                                   AS graded,
       count(*) FILTER (WHERE g.correct)                    AS positives,
       count(*) FILTER (WHERE NOT g.correct)                AS negatives,
       CASE WHEN count(g.sample_id) > 0
            THEN count(*) FILTER (WHERE g.correct)::DOUBLE / count(g.sample_id) END AS pass_rate
FROM problems p
LEFT JOIN samples s ON s.problem_id = p.problem_id
     AND s.run_id IN (SELECT run_id FROM run_roles WHERE role = 'teacher')
LEFT JOIN current_grades g ON g.sample_id = s.sample_id
GROUP BY ALL;

-- One row per run: volume, errors, tokens, cost and verdicts.
CREATE OR REPLACE VIEW run_stats AS
SELECT r.run_id, r.kind, r.provider, r.model, r.created_at,
       count(s.sample_id)                                   AS samples,
       count(s.error_class)                                 AS errors,
       count(*) FILTER (WHERE s.finish_reason = 'length')   AS truncated,
       coalesce(sum(s.prompt_tokens), 0)                    AS prompt_tokens,
       coalesce(sum(s.completion_tokens), 0)                AS completion_tokens,
       coalesce(sum(s.cost_usd), 0)                         AS cost_usd,
       count(g.sample_id)                                   AS graded,
       count(*) FILTER (WHERE g.correct)                    AS positives,
       count(*) FILTER (WHERE NOT g.correct)                AS negatives,
       CASE WHEN count(g.sample_id) > 0
            THEN count(*) FILTER (WHERE g.correct)::DOUBLE / count(g.sample_id) END AS pass_rate
FROM runs r
LEFT JOIN samples s ON s.run_id = r.run_id
LEFT JOIN current_grades g ON g.sample_id = s.sample_id
GROUP BY ALL;
