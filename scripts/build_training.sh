#!/usr/bin/env bash
# Build the training image (docker/Dockerfile) from the repository root.
#   bash scripts/build_training.sh [--tag NAME:TAG] [--base IMAGE] [--dry-run] [-- extra docker build args]
# Tags: obdb-training:<version>-<git sha> and obdb-training:latest (or --tag). The image installs the
# exact versions of constraints.txt; --base swaps the pinned CUDA base (e.g. a digest-pinned one).
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)"
sha="$(git rev-parse --short HEAD 2>/dev/null || echo local)"
tags=("obdb-training:${version}-${sha}" "obdb-training:latest")
base=""
dry_run=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tags=("$2"); shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "build_training.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
cmd=(docker build -f docker/Dockerfile)
[ -n "$base" ] && cmd+=(--build-arg "BASE_IMAGE=$base")
for tag in "${tags[@]}"; do cmd+=(-t "$tag"); done
cmd+=(${extra[@]+"${extra[@]}"} .)
if [ "$dry_run" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
"${cmd[@]}"
echo "built ${tags[*]}"
