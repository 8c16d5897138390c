#!/usr/bin/env bash
# Writes the two Grand Challenge uploads:
#   <IMAGE_NAME>_<timestamp>.tar.gz   the image (`docker save | gzip`, linux/amd64)
#   model.tar.gz                      the weights folder, contents at the tarball root
#                                     (GC extracts it to /opt/ml/model, which the image prefers
#                                     over its built-in weights)
#
#   ./export.sh [--no-build] [--image-only | --model-only] [OUTDIR]     (OUTDIR default: .)
#
# Environment: API_METHOD (invoke, the default, or exec: GC's API method, the image's label; see
# build.sh), IMAGE_NAME (default pdac-panorama, or pdac-panorama-exec for exec), CONTAINER_ENGINE,
# STORAGE_DRIVER (as build.sh), WEIGHTS_DIR (default weights/). The model tarball is the same for both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

API_METHOD="${API_METHOD:-invoke}"
case "$API_METHOD" in
  invoke) IMAGE_NAME="${IMAGE_NAME:-pdac-panorama}" ;;
  exec) IMAGE_NAME="${IMAGE_NAME:-pdac-panorama-exec}" ;;
  *) echo "export.sh: API_METHOD must be invoke or exec, got '$API_METHOD'" >&2; exit 2 ;;
esac
export API_METHOD IMAGE_NAME
WEIGHTS_DIR="${WEIGHTS_DIR:-weights}"
build=1 image=1 model=1 outdir=.
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) build=0 ;;
    --image-only) model=0 ;;
    --model-only) image=0 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "export.sh: unknown option $1" >&2; exit 2 ;;
    *) outdir="$1" ;;
  esac
  shift
done
mkdir -p "$outdir"

if [[ $model -eq 1 ]]; then
  if [[ ! -f "$WEIGHTS_DIR/manifest.json" ]]; then
    echo "export.sh: $WEIGHTS_DIR/manifest.json missing (create it with: .venv/bin/pdac weights-manifest $WEIGHTS_DIR)" >&2
    exit 4
  fi
  # Sorted, owner-neutral entries; the tarball's root is the weights folder's contents.
  tar -C "$WEIGHTS_DIR" --sort=name --owner=0 --group=0 --numeric-owner \
      --exclude='__pycache__' --exclude='*.pyc' -czf "$outdir/model.tar.gz" .
  echo "export.sh: wrote $outdir/model.tar.gz ($(du -h "$outdir/model.tar.gz" | cut -f1))"
fi

if [[ $image -eq 1 ]]; then
  if [[ $build -eq 1 ]]; then
    ./build.sh
  fi
  if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
    engine="$CONTAINER_ENGINE"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null 2>&1; then
    engine=podman
  else
    engine=buildah
  fi
  cmd=("$engine")
  if [[ "$engine" != docker && -n "${STORAGE_DRIVER:-}" ]]; then
    cmd+=(--storage-driver "$STORAGE_DRIVER")
  fi
  case "$engine" in
    docker) cmd+=(save "$IMAGE_NAME:latest") ;;
    podman) cmd+=(save --format docker-archive "$IMAGE_NAME:latest") ;;
    buildah) cmd+=(push "$IMAGE_NAME:latest" "docker-archive:/dev/stdout:$IMAGE_NAME:latest") ;;
    *) echo "export.sh: unknown CONTAINER_ENGINE '$engine'" >&2; exit 2 ;;
  esac
  out="$outdir/${IMAGE_NAME}_$(date -u +%Y%m%d-%H%M%S).tar.gz"
  tmp="$out.partial"
  trap 'rm -f "$tmp"' EXIT
  "${cmd[@]}" | gzip -c >"$tmp"
  mv "$tmp" "$out"
  echo "export.sh: wrote $out ($(du -h "$out" | cut -f1); GC API method: $API_METHOD)"
fi
