#!/usr/bin/env bash
# docker compose for this checkout: docker/compose.yaml, the env file with the passwords, and a
# project named after the checkout folder, so two checkouts on one Docker host keep their own
# containers, volumes and ports instead of sharing one fixed project.
#
#   bash scripts/compose.sh [--gpu] [--env-file FILE] COMPOSE-ARGS...
#
#   --gpu            add docker/compose.gpu.yaml (GPU reservation for the trainer)
#   --env-file FILE  compose env file (default docker/.env when it exists; see docker/.env.example)
#
# Examples: bash scripts/compose.sh up -d       (databases + dashboards)
#           bash scripts/compose.sh ps          bash scripts/compose.sh down
# Project name: $COMPOSE_PROJECT_NAME, else COMPOSE_PROJECT_NAME in the env file, else the checkout
# folder's name (lower case, other characters as "-"). Uses the docker compose plugin, else a
# standalone docker-compose (on PATH or in .venv/bin). run_training.sh and check_image.sh source
# this file for the same names.

# obdb_project_name REPO [ENV_FILE]: the compose project name for the checkout at REPO.
obdb_project_name() {
  local name="${COMPOSE_PROJECT_NAME:-}"
  if [ -z "$name" ] && [ -n "${2:-}" ] && [ -f "$2" ]; then
    name="$(sed -n 's/^COMPOSE_PROJECT_NAME=//p' "$2" | tail -n1 | tr -d "\"'")"
  fi
  if [ -z "$name" ]; then
    name="$(basename "$1" | tr '[:upper:]' '[:lower:]' | sed 's/[^a-z0-9_-]/-/g; s/^[^a-z0-9]*//')"
  fi
  printf '%s\n' "${name:-obdb}"
}

# obdb_compose_bin REPO: fills the array OBDB_COMPOSE_BIN with the compose command, or returns 1.
obdb_compose_bin() {
  if docker compose version >/dev/null 2>&1; then
    OBDB_COMPOSE_BIN=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    OBDB_COMPOSE_BIN=(docker-compose)
  elif [ -x "$1/.venv/bin/docker-compose" ]; then
    OBDB_COMPOSE_BIN=("$1/.venv/bin/docker-compose")
  else
    return 1
  fi
}

obdb_compose_main() {
  set -euo pipefail
  local repo gpu=0 env_file=""
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  while [ $# -gt 0 ]; do
    case "$1" in
      --gpu) gpu=1; shift ;;
      --env-file) env_file="$2"; shift 2 ;;
      -h|--help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; return 0 ;;
      *) break ;;
    esac
  done
  [ -n "$env_file" ] || { [ ! -f "$repo/docker/.env" ] || env_file="$repo/docker/.env"; }
  obdb_compose_bin "$repo" || { echo "compose.sh: no docker compose plugin and no docker-compose binary" >&2; return 2; }
  local cmd=("${OBDB_COMPOSE_BIN[@]}" -p "$(obdb_project_name "$repo" "$env_file")" -f "$repo/docker/compose.yaml")
  [ "$gpu" = 0 ] || cmd+=(-f "$repo/docker/compose.gpu.yaml")
  [ -z "$env_file" ] || cmd+=(--env-file "$env_file")
  exec "${cmd[@]}" "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  obdb_compose_main "$@"
fi
