-- Teachers and students, and the evaluations of students.

-- Students of one comparison and the teachers of their training data, side by side.
-- One row per (comparison, run, eval dataset, eval split, rule). Student rows come from
-- `evaluations` (metadata from the student run: base model, adapter, method, training
-- config); teacher rows are the runs listed in the students' metadata.teacher_run_ids
-- (the teacher runs of their training export), scored on the same evaluation problems
-- the students answered: rule 'teacher-samples', accuracy = pass rate of the teacher's
-- graded samples on those problems (NULL where the teacher never saw them, as for a
-- test split), with its 95% Wilson interval.
CREATE OR REPLACE VIEW method_comparison AS
WITH student_rows AS (
    SELECT e.comparison_id, 'student' AS role, e.label, e.run_id, r.model,
           r.metadata ->> 'base_model'    AS base_model,
           r.metadata ->> 'adapter_path'  AS adapter_path,
           r.metadata ->> 'method'        AS method,
           r.metadata -> 'training_config' AS training_config,
           e.eval_dataset, e.eval_split, e.rule, e.n, e.correct, e.accuracy,
           e.ci_low, e.ci_high, e.grader_version
    FROM evaluations e JOIN runs r USING (run_id)
    WHERE e.comparison_id <> ''
),
teacher_links AS (
    SELECT DISTINCT s.comparison_id, s.eval_dataset, s.eval_split,
           unnest(from_json(r.metadata -> 'teacher_run_ids', '["VARCHAR"]')) AS teacher_run_id
    FROM student_rows s JOIN runs r USING (run_id)
),
eval_problems AS (
    -- the problems the students of a comparison answered, per eval dataset/split
    SELECT DISTINCT s.comparison_id, s.eval_dataset, s.eval_split, sm.problem_id
    FROM (SELECT DISTINCT comparison_id, run_id, eval_dataset, eval_split FROM student_rows) s
    JOIN samples sm ON sm.run_id = s.run_id
    JOIN problems p ON p.problem_id = sm.problem_id
         AND p.dataset = s.eval_dataset AND p.split = s.eval_split
),
teacher_scores AS (
    SELECT t.comparison_id, t.teacher_run_id, t.eval_dataset, t.eval_split,
           count(g.sample_id)                        AS n,
           count(*) FILTER (WHERE g.correct)::DOUBLE AS correct,
           any_value(g.grader_version)               AS grader_version
    FROM teacher_links t
    LEFT JOIN eval_problems ep ON ep.comparison_id = t.comparison_id
         AND ep.eval_dataset = t.eval_dataset AND ep.eval_split = t.eval_split
    LEFT JOIN graded_samples g ON g.run_id = t.teacher_run_id AND g.problem_id = ep.problem_id
    GROUP BY ALL
),
teacher_rows AS (
    SELECT ts.comparison_id, 'teacher' AS role, r.model AS label, ts.teacher_run_id AS run_id,
           r.model, NULL AS base_model, NULL AS adapter_path, NULL AS method,
           NULL::JSON AS training_config, ts.eval_dataset, ts.eval_split,
           'teacher-samples' AS rule, ts.n, ts.correct,
           CASE WHEN ts.n > 0 THEN ts.correct / ts.n END AS accuracy,
           -- Wilson score interval, z = 1.959963984540054
           CASE WHEN ts.n > 0 THEN
               (ts.correct / ts.n + 3.841458820694124 / (2 * ts.n)
                - 1.959963984540054 * sqrt(ts.correct / ts.n * (1 - ts.correct / ts.n) / ts.n
                                           + 3.841458820694124 / (4 * ts.n * ts.n)))
               / (1 + 3.841458820694124 / ts.n) END AS ci_low,
           CASE WHEN ts.n > 0 THEN
               (ts.correct / ts.n + 3.841458820694124 / (2 * ts.n)
                + 1.959963984540054 * sqrt(ts.correct / ts.n * (1 - ts.correct / ts.n) / ts.n
                                           + 3.841458820694124 / (4 * ts.n * ts.n)))
               / (1 + 3.841458820694124 / ts.n) END AS ci_high,
           ts.grader_version
    FROM teacher_scores ts LEFT JOIN runs r ON r.run_id = ts.teacher_run_id
)
SELECT * FROM student_rows
UNION ALL BY NAME
SELECT * FROM teacher_rows;
