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
#   --data DIR       host data folder mounted at /data (default ./data)
#   --train DIR      host output folder mounted at /train (default ./train)
#   --weights DIR    host weights cache mounted at /weights (default ./weights)
#   --env-file FILE  compose env file with the passwords (default docker/.env; see docker/.env.example)
#   --detach         with --workers 1: do not wait for the container
#   --dry-run        print the docker commands instead of running them
#
# Settings paths: the container works in /workspace, where train/, data/, weights and settings/
# link to the volumes, so a settings file with save_dir "train/x" and dataset_dir "data/x" runs
# unchanged. The study storage is the compose PostgreSQL (passwords from the env file as Docker
# secrets); OBDB_OPTUNA_STORAGE in your shell is not passed in.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
settings="" workers=1 gpus="" cpu=0 detach=0 dry_run=0
data="$repo/data" train="$repo/train" weights="$repo/weights" env_file="$repo/docker/.env"
runner_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -f|--settings) settings="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    --cpu) cpu=1; shift ;;
    --data) data="$2"; shift 2 ;;
    --train) train="$2"; shift 2 ;;
    --weights) weights="$2"; shift 2 ;;
    --env-file) env_file="$2"; shift 2 ;;
    --detach) detach=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    --) shift; runner_args=("$@"); break ;;
    *) runner_args+=("$1"); shift ;;
  esac
done
die() { echo "run_training.sh: $*" >&2; exit 2; }
[ -n "$settings" ] || die "-f SETTINGS is required (see --help)"
[ -f "$settings" ] || die "settings file not found: $settings"
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || die "--workers needs a positive number, got $workers"
if [ ! -f "$env_file" ]; then
  [ "$dry_run" = 1 ] || die "no $env_file: copy docker/.env.example to docker/.env and set the passwords there"
fi
abs() {  # absolute path; the folder is made now so that Docker does not create it owned by root
  [ "$dry_run" = 1 ] || mkdir -p "$1"
  realpath -m "$1"
}
settings_dir="$(cd "$(dirname "$settings")" && pwd)"
settings_name="$(basename "$settings")"
if [ -z "$gpus" ]; then
  gpus="$(seq -s, 0 $((workers - 1)))"
fi
IFS=, read -r -a gpu_list <<< "$gpus"
[ "${#gpu_list[@]}" -ge "$workers" ] || die "--gpus $gpus names ${#gpu_list[@]} GPU(s) for $workers workers"

export OBDB_SETTINGS_DIR="$settings_dir"
export OBDB_DATA_DIR="$(abs "$data")" OBDB_TRAIN_DIR="$(abs "$train")" OBDB_WEIGHTS_DIR="$(abs "$weights")"
export OBDB_UID="$(id -u)" OBDB_GID="$(id -g)"
compose=(docker compose -f "$repo/docker/compose.yaml")
[ "$cpu" = 1 ] || compose+=(-f "$repo/docker/compose.gpu.yaml")
[ -f "$env_file" ] && compose+=(--env-file "$env_file")

run() {
  if [ "$dry_run" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

run "${compose[@]}" up -d --wait postgres
runner=(obdb run -f "/settings/$settings_name" --progress false ${runner_args[@]+"${runner_args[@]}"})
if [ "$workers" = 1 ] && [ "$detach" = 0 ]; then
  gpu_env=()
  [ "$cpu" = 1 ] || gpu_env=(-e "CUDA_VISIBLE_DEVICES=${gpu_list[0]}")
  run "${compose[@]}" run --rm ${gpu_env[@]+"${gpu_env[@]}"} -e OBDB_WORKER_ID=worker-0 trainer "${runner[@]}"
  exit 0
fi
names=()
for ((i = 0; i < workers; i++)); do
  name="obdb-worker-$i"
  names+=("$name")
  gpu_env=()
  [ "$cpu" = 1 ] || gpu_env=(-e "CUDA_VISIBLE_DEVICES=${gpu_list[$i]}")
  run "${compose[@]}" run -d --name "$name" ${gpu_env[@]+"${gpu_env[@]}"} -e "OBDB_WORKER_ID=worker-$i" \
    trainer "${runner[@]}"
done
[ "$detach" = 1 ] && [ "$workers" = 1 ] && exit 0
echo "started ${names[*]}; follow with: docker logs -f ${names[0]}"
status=0
for name in "${names[@]}"; do
  if [ "$dry_run" = 1 ]; then run docker wait "$name"; continue; fi
  code="$(docker wait "$name")"
  echo "$name exited with $code"
  [ "$code" = 0 ] || status=1
  docker rm "$name" >/dev/null
done
exit "$status"
