-- name: effect_map
-- description: Effect of post-training per head, E(l,h) = (I_post - I_pre) / (I_post + I_pre + 1e-6)
--   from head importance (head_scores.importance of each checkpoint's latest plain attribution
--   run on the task), averaged over the checkpoints of a lineage. pairing = base: every checkpoint
--   against one base (param base, else the parent of the lineage's earliest checkpoint);
--   pairing = parent: every checkpoint against its parent (else the previous checkpoint of the
--   lineage). A head missing from one side's head_scores counts as importance 0; pairs where
--   either side has no head scores on the task are skipped. With bootstrap replicates
--   (docs/confidence.md) each run stores a 95% percentile interval [lo, hi] of every head
--   importance; effect_lo / effect_hi average over the pairs E(post_lo, pre_hi) and
--   E(post_hi, pre_lo), the extremes of E over the two intervals (E rises with I_post and falls
--   with I_pre): a conservative interval. NULL unless both runs of every pair have intervals.
-- param: lineage: str                  Lineage name.
-- param: task: str = NULL              Task id or name; NULL: every task.
-- param: base: str = NULL              Base checkpoint for pairing = base (id, lineage@step, name).
-- param: pairing: str = 'base' {base|parent}  What each checkpoint is compared with.
-- returns: task_id, task, layer, head, head_label, effect, effect_min, effect_max, n_pairs,
--   mean_importance_pre, mean_importance_post, effect_lo, effect_hi
WITH posts AS (
    SELECT checkpoint_id, step, parent_id,
           lag(checkpoint_id) OVER (ORDER BY step, checkpoint_id) AS previous_id
    FROM checkpoints WHERE lineage = $lineage
),
pairs AS (
    SELECT checkpoint_id AS post_id,
           CASE WHEN $pairing = 'base'
                THEN (CASE WHEN $base IS NULL THEN hd_lineage_base($lineage) ELSE hd_checkpoint($base) END)
                ELSE coalesce(parent_id, previous_id) END AS pre_id
    FROM posts
),
imp AS (SELECT * FROM hd_importance() WHERE task_id IN (SELECT task_id FROM hd_tasks($task))),
have AS (SELECT DISTINCT checkpoint_id, task_id FROM imp),
pt AS (
    SELECT p.post_id, p.pre_id, a.task_id
    FROM pairs p
    JOIN have a ON a.checkpoint_id = p.post_id
    JOIN have b ON b.checkpoint_id = p.pre_id AND b.task_id = a.task_id
    WHERE p.pre_id IS NOT NULL AND p.pre_id <> p.post_id
),
n_pairs AS (SELECT task_id, count(*) AS n FROM pt GROUP BY task_id),
bounded AS (SELECT DISTINCT checkpoint_id, task_id FROM imp WHERE importance_lo IS NOT NULL),
n_bounded AS (
    SELECT pt.task_id, count(*) AS n FROM pt
    JOIN bounded a ON a.checkpoint_id = pt.post_id AND a.task_id = pt.task_id
    JOIN bounded b ON b.checkpoint_id = pt.pre_id AND b.task_id = pt.task_id
    GROUP BY pt.task_id
),
heads AS (
    SELECT DISTINCT pt.task_id, pt.post_id, pt.pre_id, i.layer, i.head
    FROM pt JOIN imp i ON i.task_id = pt.task_id AND i.checkpoint_id IN (pt.post_id, pt.pre_id)
),
e AS (
    SELECT h.task_id, h.layer, h.head,
           coalesce(x.importance, 0) AS i_post, coalesce(y.importance, 0) AS i_pre,
           (coalesce(x.importance, 0) - coalesce(y.importance, 0))
             / (coalesce(x.importance, 0) + coalesce(y.importance, 0) + 1e-6) AS e,
           (CASE WHEN x.layer IS NULL THEN 0 ELSE x.importance_lo END - CASE WHEN y.layer IS NULL THEN 0 ELSE y.importance_hi END)
             / (CASE WHEN x.layer IS NULL THEN 0 ELSE x.importance_lo END + CASE WHEN y.layer IS NULL THEN 0 ELSE y.importance_hi END + 1e-6) AS e_lo,
           (CASE WHEN x.layer IS NULL THEN 0 ELSE x.importance_hi END - CASE WHEN y.layer IS NULL THEN 0 ELSE y.importance_lo END)
             / (CASE WHEN x.layer IS NULL THEN 0 ELSE x.importance_hi END + CASE WHEN y.layer IS NULL THEN 0 ELSE y.importance_lo END + 1e-6) AS e_hi
    FROM heads h
    LEFT JOIN imp x ON x.checkpoint_id = h.post_id AND x.task_id = h.task_id AND x.layer = h.layer AND x.head = h.head
    LEFT JOIN imp y ON y.checkpoint_id = h.pre_id AND y.task_id = h.task_id AND y.layer = h.layer AND y.head = h.head
)
SELECT e.task_id, t.name AS task, e.layer, e.head, hd_head(e.layer, e.head) AS head_label,
       sum(e.e) / any_value(n.n) AS effect,
       CASE WHEN count(*) < any_value(n.n) THEN least(min(e.e), 0) ELSE min(e.e) END AS effect_min,
       CASE WHEN count(*) < any_value(n.n) THEN greatest(max(e.e), 0) ELSE max(e.e) END AS effect_max,
       any_value(n.n) AS n_pairs,
       sum(e.i_pre) / any_value(n.n) AS mean_importance_pre,
       sum(e.i_post) / any_value(n.n) AS mean_importance_post,
       CASE WHEN any_value(nb.n) = any_value(n.n) THEN sum(e.e_lo) / any_value(n.n) END AS effect_lo,
       CASE WHEN any_value(nb.n) = any_value(n.n) THEN sum(e.e_hi) / any_value(n.n) END AS effect_hi
FROM e
JOIN n_pairs n USING (task_id)
JOIN tasks t USING (task_id)
LEFT JOIN n_bounded nb USING (task_id)
GROUP BY e.task_id, t.name, e.layer, e.head
ORDER BY t.name, e.task_id, e.layer, e.head;
