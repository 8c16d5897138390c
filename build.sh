#!/usr/bin/env bash
# Builds the Grand Challenge image (linux/amd64) with docker, or podman where docker has no engine.
#
#   ./build.sh [extra build arguments...]                # GC's invoke API method: pdac-panorama:latest
#   API_METHOD=exec ./build.sh                           # GC's exec API method: pdac-panorama-exec:latest
#
# The API method is the image's `org.grand-challenge.api-method` label, which tells GC how to run it:
#   invoke  a warm server on port 4743 (GET /health, POST /invoke; python -m pdac.serve): models loaded once
#   exec    process.py once per case (GC runs the image's ENTRYPOINT for each case)
#
# Environment:
#   API_METHOD        invoke (default) | exec: passed on as --build-arg API_METHOD
#   IMAGE_NAME        image name (default: pdac-panorama, or pdac-panorama-exec for exec); tagged IMAGE_NAME:latest
#   CONTAINER_ENGINE  docker | podman | buildah (default: docker when its daemon answers, else podman,
#                     else buildah)
#   BASE_IMAGE        base image with Python >= 3.11 and torch (default: the Dockerfile's pinned
#                     pytorch/pytorch tag)
#   BUILD_OPTS        extra build arguments, word-split (e.g. "--network host -v /etc/ssl/certs:/etc/ssl/certs:ro")
#   STORAGE_DRIVER    podman/buildah storage driver (e.g. vfs), passed on as --storage-driver
#   BUILDAH_ISOLATION podman/buildah RUN isolation (default here: chroot, which needs no OCI runtime
#                     and works inside containers; set oci for full isolation)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

API_METHOD="${API_METHOD:-invoke}"
case "$API_METHOD" in
  invoke) IMAGE_NAME="${IMAGE_NAME:-pdac-panorama}" ;;
  exec) IMAGE_NAME="${IMAGE_NAME:-pdac-panorama-exec}" ;;
  *) echo "build.sh: API_METHOD must be invoke or exec, got '$API_METHOD'" >&2; exit 2 ;;
esac

pick_engine() {
  if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
    echo "$CONTAINER_ENGINE"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  elif command -v buildah >/dev/null 2>&1; then
    echo buildah
  else
    echo "build.sh: no container engine (docker with a running daemon, podman or buildah)" >&2
    return 1
  fi
}
ENGINE="$(pick_engine)"

args=(--platform linux/amd64 -t "$IMAGE_NAME:latest" -f Dockerfile --build-arg "API_METHOD=$API_METHOD")
if [[ -n "${BASE_IMAGE:-}" ]]; then
  args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

case "$ENGINE" in
  docker)
    cmd=(docker build)
    ;;
  podman | buildah)
    cmd=("$ENGINE")
    if [[ -n "${STORAGE_DRIVER:-}" ]]; then
      cmd+=(--storage-driver "$STORAGE_DRIVER")
    fi
    if [[ "$ENGINE" == podman ]]; then cmd+=(build); else cmd+=(bud); fi
    cmd+=(--isolation "${BUILDAH_ISOLATION:-chroot}" --format docker)
    ;;
  *)
    echo "build.sh: unknown CONTAINER_ENGINE '$ENGINE' (docker, podman or buildah)" >&2
    exit 2
    ;;
esac

# shellcheck disable=SC2206  # BUILD_OPTS is meant to be word-split
extra=(${BUILD_OPTS:-})
echo "build.sh: ${cmd[*]} ${args[*]} ${extra[*]} $* ." >&2
start=$SECONDS
"${cmd[@]}" "${args[@]}" "${extra[@]}" "$@" .
echo "build.sh: built $IMAGE_NAME:latest (GC API method: $API_METHOD) with $ENGINE in $((SECONDS - start)) s" >&2
