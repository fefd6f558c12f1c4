#!/usr/bin/env bash
# Build the training image (docker/Dockerfile) from the repository root.
#
#   bash scripts/build_training.sh [options] [-- extra docker build args]
#
#   --tag NAME:TAG        image name (default obdb-training:<version>-<git sha> and obdb-training:latest)
#   --base IMAGE          base image instead of the pinned nvidia/cuda tag (e.g. a digest, a local base)
#   --ca-bundle FILE      PEM file with extra CA certificates (a TLS-intercepting proxy's CA): added to
#                         the image's trust store before the first download; pip uses that store
#   --pip-index-url URL   PyPI mirror for pip inside the build
#   --dry-run             print the docker build command instead of running it
#
# The image installs the exact versions of constraints.txt. Example behind a proxy, no Docker Hub:
#   bash scripts/build_training.sh --base my-debian:bookworm --ca-bundle /usr/local/share/ca-certificates/proxy.crt \
#     -- --network host
set -euo pipefail
caller="$(pwd)"
cd "$(dirname "$0")/.."
die() { echo "build_training.sh: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)"
sha="$(git rev-parse --short HEAD 2>/dev/null || echo local)"
tags=("obdb-training:${version}-${sha}" "obdb-training:latest")
base="" ca_bundle="" index_url=""
dry_run=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) need "$@"; tags=("$2"); shift 2 ;;
    --base) need "$@"; base="$2"; shift 2 ;;
    --ca-bundle) need "$@"; ca_bundle="$2"; shift 2 ;;
    --pip-index-url) need "$@"; index_url="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
cmd=(docker build -f docker/Dockerfile)
[ -n "$base" ] && cmd+=(--build-arg "BASE_IMAGE=$base")
if [ -n "$ca_bundle" ]; then
  # relative to where the command was typed, not to the repository root
  case "$ca_bundle" in /*) ;; *) ca_bundle="$caller/$ca_bundle" ;; esac
  [ -r "$ca_bundle" ] || die "--ca-bundle: cannot read $ca_bundle"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_bundle" || die "--ca-bundle: no PEM certificate in $ca_bundle"
  if [ "$dry_run" = 1 ]; then
    cmd+=(--build-arg "EXTRA_CA_CERTS=<PEM from $ca_bundle>")
  else
    cmd+=(--build-arg "EXTRA_CA_CERTS=$(cat "$ca_bundle")")
  fi
fi
[ -n "$index_url" ] && cmd+=(--build-arg "PIP_INDEX_URL=$index_url")
for tag in "${tags[@]}"; do cmd+=(-t "$tag"); done
cmd+=(${extra[@]+"${extra[@]}"} .)
if [ "$dry_run" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
"${cmd[@]}"
echo "built ${tags[*]}"
