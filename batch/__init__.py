"""Batch folder scoring: every image under a folder scored exactly once, resumable.

`python -m batch score INPUT_DIR --output predictions.csv` walks the folder, scores each image
with the TorchScript model in-process (`--engine local`) or through TorchServe (`--engine http`)
and appends one row per image to a CSV or JSONL file. `python -m batch bench` measures both
engines against the in-process ceiling.

Exit status of `score` (also in `--help`):
  0  every file was scored;
  3  the job finished but some rows are errors (corrupt, unreadable or rejected images);
  2  the job itself failed (bad arguments, model missing, output exists or in use, a resume
     over another model's rows, a failed write, token refused by TorchServe: 401, or the 400
     InvalidKeyException 0.12.0 sends);
  130  interrupted (SIGTERM, Ctrl-C): the rows written so far are whole; --resume continues.
"""

EXIT_OK = 0
EXIT_JOB_FAILED = 2
EXIT_ROW_ERRORS = 3
EXIT_INTERRUPTED = 130
