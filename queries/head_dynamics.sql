-- name: head_dynamics
-- description: Per checkpoint of a lineage in step order: active heads of its circuit, heads newly
--   activated and pruned versus the previous checkpoint, heads kept, the cumulative number of
--   distinct heads so far, beside a training metric (nearest logged step at or before the
--   checkpoint's step, and the metric's mean since the previous checkpoint).
-- param: lineage: str                  Lineage name.
-- param: task: str = NULL              Task id or name; NULL: every task.
-- param: selection: str = 'threshold'  Circuit selection.
-- param: metric: str = 'reward'        training_metrics key (reward, rewards/accuracy/mean, loss ...).
-- returns: task_id, task, step, checkpoint, previous, prev_step, active, new, pruned, kept,
--   cumulative, metric, metric_step, metric_value, window_mean
SELECT d.task_id, t.name AS task, d.step, d.checkpoint, d.previous, d.prev_step,
       d.active, d.new, d.pruned, d.kept, d.cumulative,
       $metric AS metric, d.metric_step, d.metric_value, d.window_mean
FROM hd_dynamics($lineage, $task, $selection, $metric) d
JOIN tasks t USING (task_id)
ORDER BY t.name, d.task_id, d.step, d.checkpoint_id;
