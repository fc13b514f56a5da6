"""The names of the tags gatelab puts on MLflow runs, defined once. Torch-free: the trainer sets some (status,
warnings, the gate histogram), the grid driver and the search set others, the ledger, `gatelab status` and the
reports read them back. A grid's parent run and each trial's child run are told apart by KIND_TAG."""

from __future__ import annotations

# Every run
KIND_TAG = "gatelab.kind"  # "grid": a grid's parent run; "trial": one trial's run
GRID_TAG = "gatelab.grid"  # the grid's name
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: nests a trial's run under its grid's in the UI

# A trial's run
KEY_TAG = "trial_key"  # the trial's content key (grid/spec/identity.py): how the ledger finds its run
ATTEMPT_TAG = "gatelab.attempt"  # how many times a process opened the run (1 for the first)
OPENED_BY_TAG = "gatelab.opened_by"  # a random id of the process that made the run (tracking/runs/in_flight.py)
STATUS_TAG = "gatelab.status"  # a trainer.config.outcome.Status value
ERROR_TAG = "gatelab.error"  # why a failed trial failed: "<reason>: <first line of the error>"
ERROR_LENGTH = 500  # what of the error the tag keeps: a line for tables, far below MLflow's 8000
WARNING_TAG = "gatelab.warning"  # something the trial noticed and went on with
SEEDS_TAG = "gatelab.seeds"  # "adaptive": the trial was chosen by the sequential seed plan
PRUNED_TAG = "gatelab.pruned"  # "true": an Optuna pruner stopped the trial
PRUNED_AT_STEP_TAG = "gatelab.pruned_at_step"
# The gate-score histogram counts (JSON), so a report reads them with the run in one search instead of
# downloading every gated run's probes.json.
GATE_HIST_TAG = "gatelab.gate_hist"

# A grid's parent run
GRID_FILE_TAG = "gatelab.grid_file"
GRID_FILE_HASH_TAG = "gatelab.grid_file_hash"
GIT_SHA_TAG = "gatelab.git_sha"
TRIALS_TAG = "gatelab.trials"  # how many trials the grid expanded to
SUMMARY_TAG = "gatelab.summary"  # "<n> done, <m> failed", once the driver ends
SEARCH_TAG = "gatelab.search"  # "optuna": the grid is a search (also on its trials' runs)
