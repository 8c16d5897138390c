#!/usr/bin/env bash
# Container smoke test under Grand Challenge's runtime contract: builds the image, runs it on
# test/input with no network, the input mounted read-only, as the image's non-root USER, with a
# fresh empty tmpfs /tmp (and the GPU when there is one), then compares the outputs with
# test/output:
#   pdac-likelihood.json   a bare number in [0, 1], |difference| <= 0.02
#   detection_map.mha      float32, the scan's size/spacing/origin/direction, max |difference| < 0.05
# It also checks that the image's user is not root, that it has no CMD (Grand Challenge appends one
# to the ENTRYPOINT), and that the run wrote nothing outside /output and /tmp (read-only root
# filesystem with docker/podman; a scan of the container's files with buildah).
#
#   ./test.sh [--no-build] [--model-mount]
#
#   --no-build     use the existing image
#   --model-mount  two more runs proving that weights mounted at /opt/ml/model (GC's model tarball)
#                  are used: a folder whose manifest is broken must fail with the weights error
#                  (exit 4, naming /opt/ml/model), and model.tar.gz made by export.sh, unpacked
#                  there, must reproduce the expected outputs
#
# Environment:
#   CONTAINER_ENGINE  docker | podman | buildah: builds with it and runs with it. Default: docker when
#                     its daemon answers; else podman builds and buildah runs (podman run needs a
#                     working OCI runtime; buildah's chroot isolation runs anywhere as root)
#   BASE_IMAGE        passed on to build.sh;  IMAGE_NAME (default pdac-panorama)
#   STORAGE_DRIVER    podman/buildah storage driver (default: the one podman uses)
#   GPUS              auto | 0 | 1: pass the GPU to docker/podman (auto: when nvidia-smi sees one)
#   RUN_TIMEOUT       seconds per run (default 1200, a GC challenge phase's default job limit)
#   PYTHON            interpreter with SimpleITK for the comparison (default .venv/bin/python, python3)
#   EXPECTED_OUTPUT   folder with the expected outputs (default test/output)
#   KEEP_OUTPUT=1     keep the temporary output folders
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
REPO="$PWD"

IMAGE_NAME="${IMAGE_NAME:-pdac-panorama}"
IMAGE="$IMAGE_NAME:latest"
RUN_TIMEOUT="${RUN_TIMEOUT:-1200}"
INPUT="$REPO/test/input"
EXPECTED="${EXPECTED_OUTPUT:-$REPO/test/output}"
build=1 model_mount=0
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --model-mount) model_mount=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "test.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

fail() { echo "test.sh: FAIL: $*" >&2; exit 1; }
log() { echo "test.sh: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- engine ------------------------------------------------------------------------------------
if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
  builder="$CONTAINER_ENGINE" runner="$CONTAINER_ENGINE"
elif have docker && docker info >/dev/null 2>&1; then
  builder=docker runner=docker
elif have podman && have buildah; then
  builder=podman runner=buildah
elif have podman; then
  builder=podman runner=podman
elif have buildah; then
  builder=buildah runner=buildah
else
  fail "no container engine (docker with a running daemon, podman or buildah)"
fi
if [[ "$runner" != docker && -z "${STORAGE_DRIVER:-}" ]] && have podman; then
  STORAGE_DRIVER="$(podman info --format '{{.Store.GraphDriverName}}' 2>/dev/null || true)"
fi
export STORAGE_DRIVER="${STORAGE_DRIVER:-}"
store=()
if [[ "$runner" != docker && -n "$STORAGE_DRIVER" ]]; then
  store=(--storage-driver "$STORAGE_DRIVER")
fi
log "build: $builder, run: $runner${STORAGE_DRIVER:+ (storage driver $STORAGE_DRIVER)}"

# --- comparison interpreter and expected outputs ------------------------------------------------
py=""
for cand in "${PYTHON:-}" "$REPO/.venv/bin/python" python3; do
  if [[ -n "$cand" ]] && "$cand" -c "import SimpleITK, numpy" >/dev/null 2>&1; then py="$cand"; break; fi
done
[[ -n "$py" ]] || fail "no Python with SimpleITK and numpy for the comparison (set PYTHON=...)"
[[ -f "$EXPECTED/pdac-likelihood.json" && -f "$EXPECTED/images/pdac-detection-map/detection_map.mha" ]] \
  || fail "expected outputs missing in $EXPECTED"
scans=("$INPUT"/images/venous-ct/*.mha)
[[ ${#scans[@]} -eq 1 && -f "${scans[0]}" ]] || fail "expected one scan in $INPUT/images/venous-ct"

# --- build -------------------------------------------------------------------------------------
if [[ $build -eq 1 ]]; then
  CONTAINER_ENGINE="$builder" IMAGE_NAME="$IMAGE_NAME" ./build.sh
fi

# --- image checks ------------------------------------------------------------------------------
# The image's USER, and its CMD one argument a line (empty when there is none).
case "$runner" in
  docker | podman)
    user="$("$runner" "${store[@]}" image inspect --format '{{.Config.User}}' "$IMAGE")"
    cmd="$("$runner" "${store[@]}" image inspect --format '{{range .Config.Cmd}}{{println .}}{{end}}' "$IMAGE")"
    ;;
  buildah)
    user="$(buildah "${store[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")"
    cmd="$(buildah "${store[@]}" inspect --type image --format '{{range .OCIv1.Config.Cmd}}{{println .}}{{end}}' "$IMAGE")"
    ;;
  *) fail "unknown CONTAINER_ENGINE '$runner' (docker, podman or buildah)" ;;
esac
case "$user" in
  "" | root | 0 | 0:* | root:*) fail "image runs as root (USER '${user}'); Grand Challenge refuses that" ;;
esac
log "image $IMAGE runs as USER $user"
# Grand Challenge's runtime wrapper runs ENTRYPOINT + CMD with Docker's rules: a CMD (e.g. one inherited
# from the base image) would be appended to process.py's arguments.
[[ -z "$cmd" ]] || fail "image has a CMD ($(echo "$cmd" | paste -sd ' ')): it would be appended to the ENTRYPOINT on Grand Challenge; clear it with CMD []"
log "image $IMAGE has no CMD"

gpu=()
gpus="${GPUS:-auto}"
if [[ "$gpus" == auto ]]; then
  if have nvidia-smi && nvidia-smi -L >/dev/null 2>&1; then gpus=1; else gpus=0; fi
fi
if [[ "$gpus" == 1 ]]; then
  case "$runner" in
    docker) gpu=(--gpus all) ;;
    podman) gpu=(--device nvidia.com/gpu=all) ;;
    buildah) log "buildah runs without the GPU (CPU inference)" ;;
  esac
fi

# --- runs --------------------------------------------------------------------------------------
tmp_root="$(mktemp -d "${TMPDIR:-/tmp}/pdac-container-test.XXXXXX")"
ctr=""
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  if [[ -n "$ctr" ]]; then buildah "${store[@]}" rm "$ctr" >/dev/null 2>&1 || true; fi
  if [[ "${KEEP_OUTPUT:-0}" == 1 ]]; then log "outputs kept in $tmp_root"; else rm -rf "$tmp_root" || true; fi
}
trap cleanup EXIT

if [[ "$runner" == buildah ]]; then
  # One working container for all runs (with vfs storage each one is a full copy of the image).
  ctr="$(buildah "${store[@]}" from --pull-never "$IMAGE")"
  mapfile -t entrypoint < <(buildah "${store[@]}" inspect --type image \
    --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
  rootfs="$(buildah "${store[@]}" mount "$ctr")"
  isolation="${BUILDAH_ISOLATION:-chroot}"
  if [[ "$isolation" == chroot ]]; then
    # chroot isolation shares the host's network: take it away with a new network namespace.
    unshare -n true 2>/dev/null || fail "buildah with chroot isolation needs 'unshare -n' (root) for an offline run"
    offline=(unshare -n)
    net=()
  else
    offline=()
    net=(--network none)
  fi
fi

# run_image NAME OUTDIR [MODEL_DIR [UID:GID]]: runs the image's entrypoint (as the image's USER unless
# UID:GID is given); returns its exit status.
run_image() {
  local name="$1" out="$2" model="${3:-}" as="${4:-}" rc=0 mounts=() as_user=()
  mkdir -p "$out"
  chmod 0777 "$out"   # the image's user is not the caller
  mounts=(-v "$INPUT:/input:ro" -v "$out:/output:rw")
  if [[ -n "$model" ]]; then mounts+=(-v "$model:/opt/ml/model:ro"); fi
  if [[ -n "$as" ]]; then as_user=(--user "$as"); fi
  log "run '$name'${as:+ as $as}"
  local start=$SECONDS
  case "$runner" in
    docker | podman)
      timeout "$RUN_TIMEOUT" "$runner" "${store[@]}" run --rm --platform linux/amd64 --network none \
        --read-only --tmpfs /tmp:rw,exec,mode=1777 "${as_user[@]}" "${gpu[@]}" "${mounts[@]}" "$IMAGE" \
        >"$tmp_root/$name.log" 2>&1 || rc=$?
      ;;
    buildah)
      touch "$tmp_root/$name.start"
      sleep 1
      local bmounts=()
      for ((i = 1; i < ${#mounts[@]}; i += 2)); do bmounts+=(--volume "${mounts[i]}"); done
      timeout "$RUN_TIMEOUT" "${offline[@]}" buildah "${store[@]}" run --isolation "$isolation" "${net[@]}" \
        --user "${as:-$user}" --mount type=tmpfs,destination=/tmp "${bmounts[@]}" "$ctr" -- "${entrypoint[@]}" \
        >"$tmp_root/$name.log" 2>&1 || rc=$?
      # Files written outside /output and /tmp? (/input, /output, /tmp and /opt/ml/model are mounts;
      # directories are skipped because buildah creates the mount points; /etc and /run files are
      # buildah's own)
      local written
      written="$(cd "$rootfs" && find . -xdev -newer "$tmp_root/$name.start" -not -type d \
        -not -path './tmp/*' -not -path './run/*' -not -path './dev/*' \
        -not -path './etc/hosts' -not -path './etc/hostname' -not -path './etc/resolv.conf' | head -20)"
      if [[ -n "$written" ]]; then
        log "run '$name' wrote files outside /output and /tmp:"
        echo "$written" >&2
        stray_writes=1
      fi
      ;;
  esac
  log "run '$name': exit $rc after $((SECONDS - start)) s"
  return "$rc"
}

# compare OUTDIR: outputs against test/output (and the scan's geometry).
compare() {
  "$py" - "$1" "$EXPECTED" "${scans[0]}" <<'PY'
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

out, exp, scan_path = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
problems = []
MAP = Path("images/pdac-detection-map/detection_map.mha")

def likelihood(path):
    value = json.loads(path.read_text())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{path}: not a bare JSON number: {value!r}")
        return None
    return float(value)

got_l, exp_l = likelihood(out / "pdac-likelihood.json"), likelihood(exp / "pdac-likelihood.json")
if got_l is not None and exp_l is not None:
    if not 0.0 <= got_l <= 1.0:
        problems.append(f"likelihood {got_l} outside [0, 1]")
    if abs(got_l - exp_l) > 0.02:
        problems.append(f"likelihood {got_l:.4f} != expected {exp_l:.4f} (tolerance 0.02)")

got, ref, scan = sitk.ReadImage(str(out / MAP)), sitk.ReadImage(str(exp / MAP)), sitk.ReadImage(scan_path)
if got.GetPixelID() != sitk.sitkFloat32:
    problems.append(f"detection map is {got.GetPixelIDTypeAsString()}, not 32-bit float")
for other, what in ((ref, "expected map"), (scan, "input scan")):
    if got.GetSize() != other.GetSize():
        problems.append(f"detection map size {got.GetSize()} != {what} {other.GetSize()}")
        continue
    for attr in ("GetSpacing", "GetOrigin", "GetDirection"):
        a, b = np.array(getattr(got, attr)()), np.array(getattr(other, attr)())
        if not np.allclose(a, b, rtol=0, atol=1e-4):
            problems.append(f"detection map {attr[3:].lower()} {a.tolist()} != {what} {b.tolist()}")
if got.GetSize() == ref.GetSize():
    diff = np.abs(sitk.GetArrayViewFromImage(got).astype(np.float64) - sitk.GetArrayViewFromImage(ref))
    if not np.isfinite(diff).all() or diff.max() >= 0.05:
        problems.append(f"detection map max |difference| {np.nanmax(diff):.4f} (tolerance < 0.05)")
    else:
        print(f"detection map max |difference| {diff.max():.2e}; likelihood {got_l:.4f} (expected {exp_l:.4f})")
for p in problems:
    print("mismatch:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

status=0
stray_writes=0
if run_image main "$tmp_root/main"; then
  compare "$tmp_root/main" || { status=1; log "outputs differ from $EXPECTED"; }
else
  status=1
  tail -30 "$tmp_root/main.log" >&2
fi

if [[ $model_mount -eq 1 && $status -eq 0 ]]; then
  # 1. A weights folder with a broken manifest at /opt/ml/model must be the one used, and refused.
  broken="$tmp_root/broken-model"
  mkdir -p "$broken"
  echo '{"algorithm": "sha256", "files": {"lesion/fold_0/checkpoint_final.pth": "0000"}}' >"$broken/manifest.json"
  chmod -R a+rX "$broken"
  rc=0
  run_image broken-model "$tmp_root/broken-out" "$broken" || rc=$?
  if [[ $rc -ne 4 ]] || ! grep -q "/opt/ml/model" "$tmp_root/broken-model.log"; then
    status=1
    log "a broken /opt/ml/model should fail with the weights error (exit 4, naming /opt/ml/model); got exit $rc:"
    tail -5 "$tmp_root/broken-model.log" >&2
  elif [[ -n "$(find "$tmp_root/broken-out" -type f)" ]]; then
    status=1
    log "a failed run left files in /output"
  else
    log "broken /opt/ml/model refused: $(grep -m1 -o 'weights.*' "$tmp_root/broken-model.log" || true)"
  fi
  # 2. GC's model tarball, unpacked at /opt/ml/model, gives the expected outputs; this run uses an
  #    arbitrary uid, as `docker run --user "$(id -u):$(id -g)"` on one's own scans does.
  ./export.sh --model-only "$tmp_root" >/dev/null
  mkdir -p "$tmp_root/model"
  tar -C "$tmp_root/model" -xzf "$tmp_root/model.tar.gz"
  chmod -R a+rX "$tmp_root/model"
  if run_image model-tarball "$tmp_root/model-out" "$tmp_root/model" 12345:12345; then
    compare "$tmp_root/model-out" || status=1
  else
    status=1
    tail -30 "$tmp_root/model-tarball.log" >&2
  fi
fi

if [[ $stray_writes -ne 0 ]]; then
  status=1
fi
if [[ $status -eq 0 ]]; then
  log "PASS"
else
  log "FAIL${KEEP_OUTPUT:+ (logs in $tmp_root)}"
  [[ "${KEEP_OUTPUT:-0}" == 1 ]] || log "rerun with KEEP_OUTPUT=1 to keep the logs and outputs"
fi
exit "$status"
