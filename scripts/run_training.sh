#!/usr/bin/env bash
# Run the runner in the training container (docker/compose.yaml, service "trainer").
#
#   bash scripts/run_training.sh -f settings/my_run.json [options] [-- runner options and key=value overrides]
#
#   -f FILE          settings file on this host; its folder is mounted read-only at /settings
#   --workers N      start N trainer containers on the same PostgreSQL study, one GPU each
#                    (CUDA_VISIBLE_DEVICES=<gpu>); they share the trial budget and one of them trains
#                    each final model (default 1)
#   --gpus LIST      GPU indices for the workers, comma separated (default 0,1,…,N-1)
#   --cpu            no GPU reservation (machines without the NVIDIA Container Toolkit)
#   --data DIR       host data folder mounted at /data (default ./data of the checkout)
#   --train DIR      host output folder mounted at /train (default ./train of the checkout)
#   --weights DIR    host weights cache mounted at /weights (default ./weights of the checkout)
#   --env-file FILE  compose env file with the passwords (default docker/.env; see docker/.env.example)
#   --detach         with --workers 1: do not wait for the container
#   --dry-run        print the docker commands instead of running them
#
# Relative paths (-f, --data, --train, --weights, --env-file) are taken from the folder you run the
# command in. Settings paths: the container works in /workspace, where train/, data/, weights and
# settings/ link to the volumes, so a settings file with save_dir "train/x" and dataset_dir "data/x"
# runs unchanged. The study storage is the compose PostgreSQL (passwords from the env file as Docker
# secrets); OBDB_OPTUNA_STORAGE in your shell is not passed in. Workers run as containers named
# <project>-worker-<i> (project: see scripts/compose.sh); Ctrl-C stops and removes them, and a
# finished worker is removed once its exit code is read.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/compose.sh
source "$repo/scripts/compose.sh"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "run_training.sh: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
# absolute, against the caller's folder (this script never changes directory)
absolute() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

settings="" workers=1 gpus="" cpu=0 detach=0 dry_run=0
data="$repo/data" train="$repo/train" weights="$repo/weights" env_file="$repo/docker/.env"
runner_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -f|--settings) need "$@"; settings="$(absolute "$2")"; shift 2 ;;
    --workers) need "$@"; workers="$2"; shift 2 ;;
    --gpus) need "$@"; gpus="$2"; shift 2 ;;
    --cpu) cpu=1; shift ;;
    --data) need "$@"; data="$(absolute "$2")"; shift 2 ;;
    --train) need "$@"; train="$(absolute "$2")"; shift 2 ;;
    --weights) need "$@"; weights="$(absolute "$2")"; shift 2 ;;
    --env-file) need "$@"; env_file="$(absolute "$2")"; shift 2 ;;
    --detach) detach=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; runner_args=("$@"); break ;;
    *) runner_args+=("$1"); shift ;;
  esac
done
[ -n "$settings" ] || die "-f SETTINGS is required (see --help)"
[ -f "$settings" ] || die "settings file not found: $settings"
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || die "--workers needs a positive number, got $workers"
if [ ! -f "$env_file" ]; then
  [ "$dry_run" = 1 ] || die "no $env_file: copy docker/.env.example to docker/.env and set the passwords there"
fi
[ "$dry_run" = 1 ] || [ -d "$data" ] || die "data folder not found: $data (--data DIR)"
folder() {  # made now, as you, so that Docker does not create it owned by root
  if [ "$dry_run" = 0 ]; then
    mkdir -p "$1" || die "cannot create $1"
    [ -w "$1" ] && [ -x "$1" ] || die "$1 is not writable by you (uid $(id -u)); Docker creates a missing" \
      "mount folder as root: sudo chown -R $(id -u):$(id -g) $1"
  fi
  realpath -m "$1"
}
settings_dir="$(dirname "$settings")"
settings_name="$(basename "$settings")"
if [ -z "$gpus" ]; then
  gpus="$(seq -s, 0 $((workers - 1)))"
fi
IFS=, read -r -a gpu_list <<< "$gpus"
[ "${#gpu_list[@]}" -ge "$workers" ] || die "--gpus $gpus names ${#gpu_list[@]} GPU(s) for $workers workers"

OBDB_SETTINGS_DIR="$(realpath -m "$settings_dir")"
OBDB_DATA_DIR="$(realpath -m "$data")"
OBDB_TRAIN_DIR="$(folder "$train")"
OBDB_WEIGHTS_DIR="$(folder "$weights")"
OBDB_UID="$(id -u)" OBDB_GID="$(id -g)"
export OBDB_SETTINGS_DIR OBDB_DATA_DIR OBDB_TRAIN_DIR OBDB_WEIGHTS_DIR OBDB_UID OBDB_GID
project="$(obdb_project_name "$repo" "$env_file")"
if [ "$dry_run" = 1 ]; then
  OBDB_COMPOSE_BIN=(docker compose)
else
  obdb_compose_bin "$repo" || die "no docker compose plugin and no docker-compose binary (install docker-compose-plugin)"
fi
compose=("${OBDB_COMPOSE_BIN[@]}" -p "$project" -f "$repo/docker/compose.yaml")
[ "$cpu" = 1 ] || compose+=(-f "$repo/docker/compose.gpu.yaml")
[ -f "$env_file" ] && compose+=(--env-file "$env_file")

run() {
  if [ "$dry_run" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

if [ "$dry_run" = 1 ]; then
  echo "run_training.sh: mounts /settings=$OBDB_SETTINGS_DIR /data=$OBDB_DATA_DIR /train=$OBDB_TRAIN_DIR" \
    "/weights=$OBDB_WEIGHTS_DIR; env file $env_file; user $OBDB_UID:$OBDB_GID" >&2
fi
run "${compose[@]}" up -d --wait postgres
runner=(obdb run -f "/settings/$settings_name" --progress false ${runner_args[@]+"${runner_args[@]}"})
if [ "$workers" = 1 ] && [ "$detach" = 0 ]; then
  gpu_env=()
  [ "$cpu" = 1 ] || gpu_env=(-e "CUDA_VISIBLE_DEVICES=${gpu_list[0]}")
  run "${compose[@]}" run --rm ${gpu_env[@]+"${gpu_env[@]}"} -e OBDB_WORKER_ID=worker-0 trainer "${runner[@]}"
  exit 0
fi

names=()
for ((i = 0; i < workers; i++)); do names+=("$project-worker-$i"); done
# A container left from an earlier run (killed script, --detach) would block its name: remove it
# when it has exited, refuse while it still runs.
if [ "$dry_run" = 0 ]; then
  for name in "${names[@]}"; do
    state="$(docker container inspect -f '{{.State.Status}}' "$name" 2>/dev/null || true)"
    case "$state" in
      "") ;;
      running|restarting|paused)
        die "container $name is still running (an earlier run?): wait for it or stop it with docker stop $name" ;;
      *) docker rm "$name" >/dev/null ;;
    esac
  done
fi
started=() wait_pid=""
stop_workers() {  # Ctrl-C / TERM: the trainers stop cleanly on SIGTERM (checkpoint), then go
  trap - INT TERM
  [ -z "$wait_pid" ] || kill "$wait_pid" 2>/dev/null || true
  echo "run_training.sh: stopping ${started[*]:-no workers}" >&2
  [ "${#started[@]}" = 0 ] || docker stop --time 120 "${started[@]}" >/dev/null 2>&1 || true
  [ "${#started[@]}" = 0 ] || docker rm -f "${started[@]}" >/dev/null 2>&1 || true
  exit 130
}
[ "$dry_run" = 1 ] || trap stop_workers INT TERM
for ((i = 0; i < workers; i++)); do
  gpu_env=()
  [ "$cpu" = 1 ] || gpu_env=(-e "CUDA_VISIBLE_DEVICES=${gpu_list[$i]}")
  run "${compose[@]}" run -d --name "${names[$i]}" ${gpu_env[@]+"${gpu_env[@]}"} -e "OBDB_WORKER_ID=worker-$i" \
    trainer "${runner[@]}"
  started+=("${names[$i]}")
done
if [ "$detach" = 1 ] && [ "$workers" = 1 ]; then
  trap - INT TERM
  echo "started ${names[0]}; follow with: docker logs -f ${names[0]}"
  exit 0
fi
echo "started ${names[*]}; follow with: docker logs -f ${names[0]}; Ctrl-C stops them"
status=0
for name in "${names[@]}"; do
  if [ "$dry_run" = 1 ]; then run docker wait "$name"; continue; fi
  # in the background so that a signal reaches the trap at once, not after docker wait returns
  docker wait "$name" > "${TMPDIR:-/tmp}/obdb-wait-$$" &
  wait_pid=$!
  wait "$wait_pid" || true
  wait_pid=""
  code="$(cat "${TMPDIR:-/tmp}/obdb-wait-$$" 2>/dev/null || echo '?')"
  echo "$name exited with $code"
  [ "$code" = 0 ] || status=1
  docker rm "$name" >/dev/null 2>&1 || true
done
rm -f "${TMPDIR:-/tmp}/obdb-wait-$$"
exit "$status"
