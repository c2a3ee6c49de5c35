-- name: regime_overlap
-- description: Pairwise overlap of the emergent head sets of lineages over one base (see
--   regime_compare): sizes, shared heads, union and Jaccard index, per task and unordered pair.
--   jaccard is NULL when both sets are empty.
-- param: base: str                     The base checkpoint (id, lineage@step or name).
-- param: task: str = NULL              Task id or name; NULL: every task the base has a circuit on.
-- param: selection: str = 'threshold'  Circuit selection.
-- param: scope: str = 'final' {final|union}  final: last checkpoint per lineage; union: all of them.
-- param: lineages: str = NULL          Comma-separated lineage names; NULL: every lineage.
-- returns: task_id, task, lineage_a, lineage_b, n_a, n_b, shared, union_size, jaccard, shared_heads
WITH lineages AS (
    SELECT DISTINCT lineage, task_id FROM hd_regime_members($base, $task, $selection, $scope, $lineages)
),
em AS (
    SELECT lineage, task_id, layer, head FROM hd_regime_sets($base, $task, $selection, $scope, $lineages)
    WHERE status = 'emergent'
),
pairs AS (
    SELECT a.task_id, a.lineage AS lineage_a, b.lineage AS lineage_b
    FROM lineages a JOIN lineages b ON a.task_id = b.task_id AND a.lineage < b.lineage
),
sizes AS (SELECT lineage, task_id, count(*) AS n FROM em GROUP BY ALL),
shared AS (
    SELECT p.task_id, p.lineage_a, p.lineage_b, count(*) AS shared,
           string_agg(hd_head(x.layer, x.head), ',' ORDER BY x.layer, x.head) AS shared_heads
    FROM pairs p
    JOIN em x ON x.task_id = p.task_id AND x.lineage = p.lineage_a
    JOIN em y ON y.task_id = p.task_id AND y.lineage = p.lineage_b AND y.layer = x.layer AND y.head = x.head
    GROUP BY ALL
)
SELECT p.task_id, t.name AS task, p.lineage_a, p.lineage_b,
       coalesce(sa.n, 0) AS n_a, coalesce(sb.n, 0) AS n_b, coalesce(s.shared, 0) AS shared,
       coalesce(sa.n, 0) + coalesce(sb.n, 0) - coalesce(s.shared, 0) AS union_size,
       CASE WHEN coalesce(sa.n, 0) + coalesce(sb.n, 0) = 0 THEN NULL
            ELSE coalesce(s.shared, 0) / (coalesce(sa.n, 0) + coalesce(sb.n, 0) - coalesce(s.shared, 0)) END AS jaccard,
       coalesce(s.shared_heads, '') AS shared_heads
FROM pairs p
JOIN tasks t USING (task_id)
LEFT JOIN sizes sa ON sa.task_id = p.task_id AND sa.lineage = p.lineage_a
LEFT JOIN sizes sb ON sb.task_id = p.task_id AND sb.lineage = p.lineage_b
LEFT JOIN shared s USING (task_id, lineage_a, lineage_b)
ORDER BY t.name, p.task_id, p.lineage_a, p.lineage_b;
