#!/usr/bin/env bash
# The container path as a user runs it, in one command: build the image, bring up PostgreSQL and
# the dashboards (README order: before any training), train the demo with tiny overrides through
# run_training.sh as a non-root host user, check the outputs and their owner, resume, run two
# workers twice (no leftover containers), and check that both dashboards show the study and the runs
# (HTTP APIs plus a headless Chromium screenshot of each). Prints a pass/fail table; exit 1 on any
# failure, 2 on bad options.
#
#   bash scripts/check_image.sh [options] [-- extra docker build args, e.g. --network host]
#
#   --base IMAGE          base image for the build (default: the Dockerfile's pinned nvidia/cuda tag)
#   --ca-bundle FILE      extra CA certificates for the build (see build_training.sh)
#   --pip-index-url URL   PyPI mirror for the build
#   --image NAME:TAG      image to build and check (default obdb-training:latest)
#   --skip-build          check an image built before
#   --postgres-image IMG  PostgreSQL image (default: postgres:17.2-bookworm if present or pullable,
#                         else a stand-in built from --base with docker/postgres-standin.Dockerfile)
#   --uid N --gid N       host user for the run when this script runs as root (default 1000:1000;
#                         it needs access to the Docker socket, which it gets through the socket's group)
#   --out DIR             folder for the work files, logs and screenshots (default: a new /tmp folder)
#   --keep                leave the compose project (containers, volumes) running for a look
#
# Needs: a Docker engine, docker compose (plugin or docker-compose), chromium for the screenshots.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/compose.sh
source "$repo/scripts/compose.sh"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "check_image.sh: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
absolute() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

base="" ca_bundle="" index_url="" image="obdb-training:latest" skip_build=0 pg_image="" keep=0 out=""
check_uid=1000 check_gid=1000
build_extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --base) need "$@"; base="$2"; shift 2 ;;
    --ca-bundle) need "$@"; ca_bundle="$(absolute "$2")"; shift 2 ;;
    --pip-index-url) need "$@"; index_url="$2"; shift 2 ;;
    --image) need "$@"; image="$2"; shift 2 ;;
    --skip-build) skip_build=1; shift ;;
    --postgres-image) need "$@"; pg_image="$2"; shift 2 ;;
    --uid) need "$@"; check_uid="$2"; shift 2 ;;
    --gid) need "$@"; check_gid="$2"; shift 2 ;;
    --out) need "$@"; out="$(absolute "$2")"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; build_extra=("$@"); break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
command -v docker >/dev/null 2>&1 || die "no docker command on PATH"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed): start dockerd first"
obdb_compose_bin "$repo" || die "no docker compose plugin and no docker-compose binary on PATH"
if [ "$(id -u)" != 0 ]; then
  check_uid="$(id -u)" check_gid="$(id -g)"
fi
[[ "$check_uid" =~ ^[0-9]+$ ]] && [ "$check_uid" != 0 ] || die "--uid must be a non-root numeric uid, got $check_uid"
[[ "$check_gid" =~ ^[0-9]+$ ]] || die "--gid must be numeric, got $check_gid"
chromium_bin="$(command -v chromium || command -v chromium-browser || true)"

[ -n "$out" ] || out="$(mktemp -d /tmp/obdb-check.XXXXXX)"
mkdir -p "$out"
chmod 0755 "$out"  # the non-root user must reach $out/work
work="$out/work" logs="$out/logs" shots="$out/screenshots"
rm -rf "$work"
mkdir -p "$work/sub" "$work/train" "$work/data" "$work/weights" "$work/settings" "$logs" "$shots"
project="obdb-check-$$"
started_at=$SECONDS

# --- the pass/fail table ---------------------------------------------------------------------
results=()
record() {  # record NAME PASS|FAIL SECONDS DETAIL
  results+=("$1|$2|$3|$4")
  printf '[%s] %-36s %5ss  %s\n' "$2" "$1" "$3" "$4"
}
# step NAME DETAIL COMMAND...: run COMMAND (log in $logs/NAME.log), record PASS/FAIL with its time.
# COMMAND runs as a background job and step itself is never called in a condition (if, ||): so
# set -e holds inside the check functions; in a condition bash ignores it there and only the last
# command would count. $last is the result of the last step.
last=PASS
step() {
  local name="$1" detail="$2" t0=$SECONDS log rc=0
  shift 2
  log="$logs/${name// /_}.log"
  log="${log//[^A-Za-z0-9_.\/-]/}"
  ( set -e; "$@" ) > "$log" 2>&1 &
  wait "$!" || rc=$?
  if [ "$rc" = 0 ]; then
    last=PASS
    record "$name" PASS $((SECONDS - t0)) "$detail"
  else
    last=FAIL
    record "$name" FAIL $((SECONDS - t0)) "$detail (log: $log)"
    tail -n 15 "$log" | sed 's/^/    /' >&2
  fi
}
# go_on: after a step the rest depends on, stop with the table when it failed
go_on() { [ "$last" = PASS ] || { print_table || true; exit 1; }; }
print_table() {
  local failed=0 row name result secs detail
  echo
  printf '| %-36s | %-6s | %6s | %s\n' check result time detail
  printf '|%s|%s|%s|%s\n' "--------------------------------------" "--------" "--------" "--------"
  for row in "${results[@]}"; do
    IFS='|' read -r name result secs detail <<< "$row"
    printf '| %-36s | %-6s | %5ss | %s\n' "$name" "$result" "$secs" "$detail"
    [ "$result" = PASS ] || failed=1
  done
  echo "total $((SECONDS - started_at)) s; work files, logs and screenshots in $out"
  return "$failed"
}

# --- running as the non-root host user ---------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
  sock_gid="$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)"
  [ "$sock_gid" != 0 ] || die "the Docker socket belongs to group root: a non-root user cannot reach it"
  chown -R "$check_uid:$check_gid" "$work"
  as_user() {
    setpriv --reuid="$check_uid" --regid="$check_gid" --groups="$sock_gid" env HOME="$work" "$@"
  }
else
  as_user() { "$@"; }
fi
env_file="$work/obdb.env"
compose_user() { as_user bash "$repo/scripts/compose.sh" --env-file "$env_file" "$@"; }

cleanup() {
  if [ "$keep" = 0 ]; then
    compose_user down -v --remove-orphans >> "$logs/teardown.log" 2>&1
  else
    echo "kept: bash scripts/compose.sh --env-file $env_file ps (and ... down -v when done)"
  fi
}
trap cleanup EXIT

# --- image ---------------------------------------------------------------------------------------
build=(bash "$repo/scripts/build_training.sh" --tag "$image")
[ -z "$base" ] || build+=(--base "$base")
[ -z "$ca_bundle" ] || build+=(--ca-bundle "$ca_bundle")
[ -z "$index_url" ] || build+=(--pip-index-url "$index_url")
build+=(-- ${build_extra[@]+"${build_extra[@]}"})
if [ "$skip_build" = 0 ]; then
  step "build image" "$image${base:+ on $base}" "${build[@]}"
else
  step "image present" "$image (--skip-build)" docker image inspect "$image"
fi
go_on
size="$(docker image inspect -f '{{.Size}}' "$image")"
record "image size" PASS 0 "$((size / 1000000)) MB"

if [ -z "$pg_image" ]; then
  pg_image="postgres:17.2-bookworm"
  if ! docker image inspect "$pg_image" >/dev/null 2>&1 && ! timeout 120 docker pull "$pg_image" >/dev/null 2>&1; then
    pg_image="obdb-postgres-standin:15"
    standin=(docker build -f "$repo/docker/postgres-standin.Dockerfile" -t "$pg_image")
    [ -z "$base" ] || standin+=(--build-arg "BASE_IMAGE=$base")
    standin+=(${build_extra[@]+"${build_extra[@]}"} "$repo/docker")
    step "postgres stand-in image" "postgres:17.2-bookworm unreachable; Debian postgresql-15" "${standin[@]}"
    go_on
  fi
fi

# --- work folder, env file, settings, data -------------------------------------------------------
free_port() {  # a port nothing listens on
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}
optuna_port="$(free_port)" tb_port="$(free_port)" pg_port="$(free_port)"
cat > "$env_file" <<EOF
COMPOSE_PROJECT_NAME=$project
POSTGRES_PASSWORD=check-$RANDOM$RANDOM-pg
MONGO_PASSWORD=check-$RANDOM$RANDOM-mongo
POSTGRES_IMAGE=$pg_image
OBDB_IMAGE=$image
OBDB_BIND_ADDRESS=127.0.0.1
OPTUNA_DASHBOARD_PORT=$optuna_port
TENSORBOARD_PORT=$tb_port
POSTGRES_PUBLISHED_PORT=$pg_port
OBDB_TRAIN_DIR=$work/train
OBDB_DATA_DIR=$work/data
OBDB_WEIGHTS_DIR=$work/weights
OBDB_SETTINGS_DIR=$work/settings
OBDB_UID=$check_uid
OBDB_GID=$check_gid
EOF
cp "$repo/settings/demo.json" "$work/settings/demo.json"
[ "$(id -u)" != 0 ] || chown -R "$check_uid:$check_gid" "$work"
chmod 0600 "$env_file"

step "demo data (in the image)" "python -m obdb.demo as uid $check_uid" \
  as_user docker run --rm --user "$check_uid:$check_gid" -v "$work/data:/data" "$image" \
  python -m obdb.demo --out /data/demo --quiet
go_on

# --- dashboards on a fresh database, before any training (README order) -----------------------
http_ok() { curl -fsS --max-time 5 -o "${2:-/dev/null}" "$1"; }
wait_http() {  # wait_http URL SECONDS
  local deadline=$((SECONDS + $2))
  until http_ok "$1"; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "$1 did not answer in $2 s"; return 1; }
    sleep 1
  done
}
dashboards_fresh() {
  compose_user up -d --wait postgres
  compose_user up -d optuna-dashboard tensorboard
  wait_http "http://127.0.0.1:$optuna_port/api/studies" 120
  wait_http "http://127.0.0.1:$tb_port/data/runs" 120
  sleep 10  # a crash loop would show as restarts by now
  local id restarts
  for service in optuna-dashboard tensorboard; do
    id="$(compose_user ps -q "$service")"
    restarts="$(docker inspect -f '{{.RestartCount}} {{.State.Status}}' "$id")"
    echo "$service: restarts/state $restarts"
    [ "$restarts" = "0 running" ] || return 1
  done
  # published on 127.0.0.1 only
  local ports
  ports="$(docker port "$(compose_user ps -q optuna-dashboard)"; docker port "$(compose_user ps -q tensorboard)")"
  echo "$ports"
  [ -n "$ports" ] && ! grep -qv -- '-> 127\.0\.0\.1:' <<< "$ports"
}
step "dashboards up on a fresh database" "optuna-dashboard :$optuna_port, tensorboard :$tb_port, 0 restarts" \
  dashboards_fresh

# --- training as the non-root user, relative paths from another folder ---------------------------
# tiny: one search trial (the warm start) of 1 epoch and 1 final epoch per variant at 160 px; from
# random init (no ImageNet weights here) the lower learning rates keep the short run from diverging
tiny=(max_num_trials=1 num_initial_data_points=1 search_epochs=1 max_train_epochs=1 max_plateau_count=1
      train.workers=0 model.min_size=160 model.max_size=160 "hpo_parameters.lr=[0.001,0.005]"
      resnet18.optimal_hpo_settings.lr=0.005 mobilenet_v3_large.optimal_hpo_settings.lr=0.005)
train_run() {  # relative paths, resolved against the folder the command is typed in
  (cd "$work/sub" && as_user bash "$repo/scripts/run_training.sh" --cpu -f ../settings/demo.json --data ../data \
    --train ../train --weights ../weights --env-file ../obdb.env "$@" -- "${tiny[@]}")
}
step "train demo (non-root, --cpu)" "uid $check_uid, 2 variants, tiny overrides, relative paths" train_run

outputs_ok() {
  local variant missing=0 foreign
  for variant in resnet18 mobilenet_v3_large; do
    for file in model.pt metrics.json best_params.json class_map.json manifest.json checkpoints/last.pt; do
      [ -s "$work/train/demo/$variant/$file" ] || { echo "missing train/demo/$variant/$file"; missing=1; }
    done
  done
  [ -s "$work/train/demo/summary.json" ] || { echo "missing train/demo/summary.json"; missing=1; }
  find "$work/train/demo/runs" -name 'events.out.tfevents.*' | head -n 3
  [ -n "$(find "$work/train/demo/runs" -name 'events.out.tfevents.*' | head -n1)" ] || { echo "no events"; missing=1; }
  foreign="$(find "$work/train" "$work/weights" ! -uid "$check_uid" | head -n 5)"
  [ -z "$foreign" ] || { echo "not owned by uid $check_uid: $foreign"; missing=1; }
  return "$missing"
}
step "outputs complete, owned by the user" "model.pt, metrics, checkpoints, TensorBoard events; owner $check_uid" \
  outputs_ok

resume_ok() {
  local before after
  before="$(stat -c %Y "$work/train/demo/resnet18/model.pt" "$work/train/demo/mobilenet_v3_large/model.pt")"
  train_run
  after="$(stat -c %Y "$work/train/demo/resnet18/model.pt" "$work/train/demo/mobilenet_v3_large/model.pt")"
  [ "$before" = "$after" ] || { echo "model.pt rewritten on resume"; return 1; }
}
step "resume (nothing retrained)" "second run exits 0, model.pt untouched" resume_ok

workers_ok() {
  train_run --workers 2
  train_run --workers 2   # the same names again: no "already in use"
  local left
  left="$(docker ps -a --filter "name=^${project}-worker-" --format '{{.Names}}')"
  [ -z "$left" ] || { echo "left behind: $left"; return 1; }
}
step "two workers, twice, none left" "--workers 2 twice; no ${project}-worker-* containers after" workers_ok

# --- dashboards show the study and the runs ------------------------------------------------------
optuna_study_ok() {
  wait_http "http://127.0.0.1:$optuna_port/api/studies" 30
  http_ok "http://127.0.0.1:$optuna_port/api/studies" "$logs/studies.json"
  cat "$logs/studies.json"; echo
  grep -q '"demo-resnet18"' "$logs/studies.json"
}
step "optuna-dashboard lists the study" "demo-resnet18 in /api/studies" optuna_study_ok
tensorboard_runs_ok() {
  local deadline=$((SECONDS + 90))
  until http_ok "http://127.0.0.1:$tb_port/data/runs" "$logs/runs.json" && grep -q 'demo/resnet18' "$logs/runs.json"; do
    [ "$SECONDS" -lt "$deadline" ] || { cat "$logs/runs.json"; return 1; }
    sleep 3
  done
  cat "$logs/runs.json"; echo
}
step "tensorboard lists the runs" "demo/runs/demo/<variant>/… in /data/runs" tensorboard_runs_ok

# headless Chromium: the DOM must name the study / the runs, and the screenshot must be a real page
chromium_run() {  # chromium_run URL (--dump-dom | --screenshot=FILE)
  local profile
  profile="$(mktemp -d)"
  timeout 120 "$chromium_bin" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --disable-dev-shm-usage \
    --hide-scrollbars "--user-data-dir=$profile" --window-size=1400,900 --virtual-time-budget=15000 \
    --run-all-compositor-stages-before-draw "$2" "$1" 2>>"$logs/chromium.err"
  local rc=$?
  rm -rf "$profile"
  return "$rc"
}
screenshot_ok() {  # screenshot_ok URL NEEDLE FILE
  [ -n "$chromium_bin" ] || { echo "chromium is not installed (apt-get install chromium)"; return 1; }
  local attempt
  for attempt in 1 2 3 4; do
    chromium_run "$1" --dump-dom > "$logs/dom.html"
    grep -q -- "$2" "$logs/dom.html" && break
    [ "$attempt" != 4 ] || { echo "'$2' not in the rendered page of $1"; return 1; }
    sleep 3
  done
  chromium_run "$1" "--screenshot=$3" >/dev/null || return 1
  [ "$(head -c 8 "$3" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || { echo "$3 is not a PNG"; return 1; }
  [ "$(stat -c %s "$3")" -gt 20000 ] || { echo "$3 looks blank"; return 1; }
}
study_id="$(python3 -c 'import json, sys
print(next((s["study_id"] for s in json.load(open(sys.argv[1]))["studies"] if s["study_name"] == "demo-resnet18"), 1))' \
  "$logs/studies.json" 2>/dev/null || echo 1)"
step "screenshot: optuna-dashboard" "study page shows demo-resnet18 ($shots/optuna.png)" \
  screenshot_ok "http://127.0.0.1:$optuna_port/dashboard/studies/$study_id" "demo-resnet18" "$shots/optuna.png"
# Time Series view filtered to three tags (it renders only the cards in view), as tests/test_dashboards.py
step "screenshot: tensorboard" "time series of the demo runs ($shots/tensorboard.png)" \
  screenshot_ok "http://127.0.0.1:$tb_port/?tagFilter=%5E(loss%2Floss%7Cval%2Fmap%7Clr)%24#timeseries" \
  "demo/runs/demo/resnet18" "$shots/tensorboard.png"

print_table
