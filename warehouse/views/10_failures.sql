-- Failure-chain views: where the teachers go wrong. Re-created whenever this file changes.
-- All verdicts are the current grader's, and all rationales a teacher's: the samples of
-- student runs (`distill eval`, `distill compare`) are evaluations, not failure chains.

-- The teachers' graded rationales (the base of every view below).
CREATE OR REPLACE VIEW teacher_graded_samples AS
SELECT * FROM graded_samples
WHERE run_id IN (SELECT run_id FROM run_roles WHERE role = 'teacher');

-- Every negative rationale with what it should have reached and what it reached instead.
CREATE OR REPLACE VIEW failure_chains AS
SELECT n.sample_id, n.problem_id, p.dataset, p.subject, p.level,
       r.model             AS teacher,
       n.run_id,
       p.question,
       p.reference_answer,
       n.extracted_answer,            -- the wrong final answer (NULL: none found)
       n.normalized_answer,           -- the same in the grader's normal form: group by this
                                      -- (\frac{5}{2} and 5/2 are both 5/2)
       n.grade_status,                -- wrong | no_answer | unparseable | timeout | ...
       n.finish_reason,
       length(n.completion) AS rationale_chars,
       n.completion        AS rationale,
       n.grader_version
FROM teacher_graded_samples n
JOIN problems p ON p.problem_id = n.problem_id
JOIN runs r ON r.run_id = n.run_id
WHERE NOT n.correct;

-- Problems where every graded rationale, from every teacher, is negative: for these the
-- negatives are the only training signal.
CREATE OR REPLACE VIEW hard_problems AS
SELECT p.problem_id, p.dataset, p.subject, p.level,
       count(*)                                     AS rationales,
       count(DISTINCT r.model)                      AS teachers,
       count(DISTINCT g.extracted_answer)           AS distinct_wrong_answers,
       mode(g.extracted_answer)                     AS commonest_wrong_answer,
       p.reference_answer,
       p.question
FROM teacher_graded_samples g
JOIN problems p ON p.problem_id = g.problem_id
JOIN runs r ON r.run_id = g.run_id
GROUP BY p.problem_id, p.dataset, p.subject, p.level, p.reference_answer, p.question
HAVING count(*) FILTER (WHERE g.correct) = 0;

-- Problems where teachers disagree: at least one teacher gets the majority of its
-- rationales right and another gets the majority wrong (majority = strictly more than
-- half). Per-teacher pass rates and commonest answers show the disagreement.
CREATE OR REPLACE VIEW disagreements AS
WITH per_teacher AS (
    SELECT g.problem_id, r.model AS teacher,
           count(*)                                   AS graded,
           count(*) FILTER (WHERE g.correct)          AS positives,
           count(*) FILTER (WHERE g.correct)::DOUBLE / count(*) AS pass_rate,
           mode(g.extracted_answer)                   AS commonest_answer
    FROM teacher_graded_samples g JOIN runs r ON r.run_id = g.run_id
    GROUP BY g.problem_id, r.model
)
SELECT p.problem_id, p.dataset, p.subject, p.level, p.reference_answer,
       list(t.teacher ORDER BY t.teacher) FILTER (WHERE 2 * t.positives > t.graded) AS solved_by,
       list(t.teacher ORDER BY t.teacher) FILTER (WHERE 2 * t.positives <= t.graded) AS failed_by,
       map(list(t.teacher ORDER BY t.teacher), list(round(t.pass_rate, 3) ORDER BY t.teacher))
                                                    AS pass_rates,
       map(list(t.teacher ORDER BY t.teacher), list(t.commonest_answer ORDER BY t.teacher))
                                                    AS commonest_answers,
       max(t.pass_rate) - min(t.pass_rate)          AS pass_rate_gap,
       p.question
FROM per_teacher t JOIN problems p ON p.problem_id = t.problem_id
GROUP BY p.problem_id, p.dataset, p.subject, p.level, p.reference_answer, p.question
HAVING count(*) FILTER (WHERE 2 * t.positives > t.graded) > 0
   AND count(*) FILTER (WHERE 2 * t.positives <= t.graded) > 0;
