#!/usr/bin/env bash
# Start optuna-dashboard and TensorBoard locally (no Docker), on 127.0.0.1 by default.
#
#   bash scripts/dashboards.sh [--storage URL] [--logdir DIR] [--optuna-port 8880] [--tensorboard-port 6006]
#                              [--host 127.0.0.1]
#
# --storage defaults to $OBDB_OPTUNA_STORAGE, else the demo's SQLite file (train/demo/optuna.db);
# --logdir defaults to train/demo/runs. The ports are checked first: a busy one stops the script
# (exit 2) with the process that holds it. The URLs are printed once both servers answer; if one
# fails to start, the other is stopped and the exit code is 1. Both stop together on Ctrl-C (or when
# this script is terminated). The programs come from $VENV (default .venv, made by setup_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "dashboards.sh: $*" >&2; exit 2; }
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
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
for port in "$optuna_port" "$tb_port"; do
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "not a port number: $port"
done
[ "$optuna_port" != "$tb_port" ] || die "--optuna-port and --tensorboard-port are both $tb_port"

# port_owner PORT: "python3 (pid 123)" for the process listening on PORT, when ss or lsof can tell.
port_owner() {
  local line=""
  if command -v ss >/dev/null 2>&1; then
    line="$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -n1 || true)"
    if [ -n "$line" ]; then
      sed 's/users:(("\([^"]*\)",pid=\([0-9]*\)/\1 (pid \2)/' <<< "$line"
      return
    fi
  fi
  if command -v lsof >/dev/null 2>&1; then
    line="$(lsof -nP -iTCP:"$1" -sTCP:LISTEN -Fpc 2>/dev/null | head -n2 | tr '\n' ' ' || true)"
    if [ -n "$line" ]; then
      sed 's/^p\([0-9]*\) c\([^ ]*\).*/\2 (pid \1)/' <<< "$line"
      return
    fi
  fi
  echo "another process (not visible to this user; try: sudo ss -ltnp 'sport = :$1')"
}

# listening PORT: something accepts connections on the address we would bind (a server on
# 0.0.0.0 or on $host blocks our bind either way).
listening() {
  local probe="$host"
  [ "$probe" != 0.0.0.0 ] || probe=127.0.0.1
  (exec 3<>"/dev/tcp/$probe/$1") 2>/dev/null
}

for pair in "optuna-port:$optuna_port" "tensorboard-port:$tb_port"; do
  option="${pair%%:*}" port="${pair##*:}"
  if listening "$port"; then
    die "port $port on $host is already in use by $(port_owner "$port"); stop it or pick another port:" \
      "--$option PORT"
  fi
done

bin="${VENV:-.venv}/bin"
if [ ! -x "$bin/optuna-dashboard" ] || [ ! -x "$bin/tensorboard" ]; then
  [ -z "${VENV:-}" ] || die "$bin has no optuna-dashboard/tensorboard"
  bash scripts/setup_env.sh
fi
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT
"$bin/optuna-dashboard" "$storage" --host "$host" --port "$optuna_port" &
pids+=($!)
"$bin/tensorboard" --logdir "$logdir" --host "$host" --port "$tb_port" --reload_interval 5 &
pids+=($!)

# Wait until both answer; a server that exits first (bad storage URL, a port taken meanwhile) ends
# the script with an error instead of URLs that serve nothing.
deadline=$((SECONDS + ${OBDB_DASHBOARD_START_TIMEOUT:-120}))
for pair in "optuna-dashboard:$optuna_port:${pids[0]}" "tensorboard:$tb_port:${pids[1]}"; do
  IFS=: read -r what port pid <<< "$pair"
  until listening "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "dashboards.sh: $what did not start (see its messages above); stopping" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "dashboards.sh: $what does not answer on port $port after ${OBDB_DASHBOARD_START_TIMEOUT:-120} s" >&2
      exit 1
    fi
    sleep 0.5
  done
done
echo "optuna-dashboard: http://$host:$optuna_port  (storage ${storage%%://*}://…)"
echo "tensorboard:      http://$host:$tb_port  (logdir $logdir)"
# the first one to stop ends the other
wait -n "${pids[@]}" || true
