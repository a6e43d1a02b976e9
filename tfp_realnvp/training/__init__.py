"""The training job: `train_lib.train_and_evaluate(config, workdir)` and everything only it uses.

`configs` (the `TrainConfig` and its presets), `flow_builder` (the flow a config describes), `losses`,
`optimization`, `strategies` (`tf.distribute`), `checkpoints` and `workdirs` (restore, resume, the lock),
`weight_averaging` (EMA weights), `batch_norm_statistics` (batch-norm statistics for the evaluated weights),
`wall_time` (the training seconds, the budget's clock and the validation curve), `workdir_evaluation` (a
finished run on another split) and `reporting` (log lines, metrics, sample grids).
"""
