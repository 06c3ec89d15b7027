"""Training the model on the simulated world or on a labelled recording, and judging it.

`data` (Parquet shards rendered from the simulated world), `labels` and `labelled` (labels files
on a user's recording, and training data from them), `train` and `train_state` (the training
loop, its optimizer state and newest checkpoint), `finetune` (a run started from a checkpoint),
`evaluate` and `eval_report` (metrics per sensor subset, quality targets, the Markdown report),
`checkpoint` (safetensors checkpoints with their configs in the metadata).
"""
