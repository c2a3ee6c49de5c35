-- name: dynamics_correlation
-- description: Pearson correlation, over the checkpoints of a lineage, between head dynamics
--   (newly activated, pruned, active heads; see head_dynamics) and a training metric: its value
--   at the checkpoint step and its mean since the previous checkpoint. NULL with fewer than two
--   points or a constant series.
-- param: lineage: str                  Lineage name.
-- param: task: str = NULL              Task id or name; NULL: every task.
-- param: selection: str = 'threshold'  Circuit selection.
-- param: metric: str = 'reward'        training_metrics key.
-- returns: task_id, task, metric, n, corr_new, corr_pruned, corr_active, corr_new_window,
--   corr_pruned_window
WITH d AS (SELECT * FROM hd_dynamics($lineage, $task, $selection, $metric))
SELECT d.task_id, t.name AS task, $metric AS metric,
       count(*) FILTER (WHERE d.new IS NOT NULL AND d.metric_value IS NOT NULL) AS n,
       nullif(corr(d.new, d.metric_value), 'NaN'::DOUBLE) AS corr_new,
       nullif(corr(d.pruned, d.metric_value), 'NaN'::DOUBLE) AS corr_pruned,
       nullif(corr(d.active, d.metric_value), 'NaN'::DOUBLE) AS corr_active,
       nullif(corr(d.new, d.window_mean), 'NaN'::DOUBLE) AS corr_new_window,
       nullif(corr(d.pruned, d.window_mean), 'NaN'::DOUBLE) AS corr_pruned_window
FROM d
JOIN tasks t USING (task_id)
GROUP BY ALL
ORDER BY t.name, d.task_id;
