#!/usr/bin/env bash
# Start optuna-dashboard and TensorBoard locally (no Docker), on 127.0.0.1 by default.
#
#   bash scripts/dashboards.sh [--storage URL] [--logdir DIR] [--optuna-port 8880] [--tensorboard-port 6006]
#                              [--host 127.0.0.1]
#
# --storage defaults to $OBDB_OPTUNA_STORAGE, else the demo's SQLite file (train/demo/optuna.db);
# --logdir defaults to train/demo/runs. Both stop together on Ctrl-C (or when this script is
# terminated). Open http://127.0.0.1:8880 and http://127.0.0.1:6006.
set -euo pipefail
cd "$(dirname "$0")/.."
storage="${OBDB_OPTUNA_STORAGE:-sqlite:///train/demo/optuna.db}"
logdir="train/demo/runs"
optuna_port=8880 tb_port=6006 host=127.0.0.1
while [ $# -gt 0 ]; do
  case "$1" in
    --storage) storage="$2"; shift 2 ;;
    --logdir) logdir="$2"; shift 2 ;;
    --optuna-port) optuna_port="$2"; shift 2 ;;
    --tensorboard-port) tb_port="$2"; shift 2 ;;
    --host) host="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "dashboards.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bin=.venv/bin
if [ ! -x "$bin/optuna-dashboard" ] || [ ! -x "$bin/tensorboard" ]; then
  bash scripts/setup_env.sh
fi
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT
"$bin/optuna-dashboard" "$storage" --host "$host" --port "$optuna_port" &
pids+=($!)
"$bin/tensorboard" --logdir "$logdir" --host "$host" --port "$tb_port" --reload_interval 5 &
pids+=($!)
echo "optuna-dashboard: http://$host:$optuna_port  (storage ${storage%%://*}://…)"
echo "tensorboard:      http://$host:$tb_port  (logdir $logdir)"
# the first one to stop ends the other
wait -n "${pids[@]}" || true
