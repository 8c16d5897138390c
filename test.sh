#!/usr/bin/env bash
# Container smoke test under Grand Challenge's runtime contract, for both of GC's API methods (the
# image's `org.grand-challenge.api-method` label, fixed at build time by ARG API_METHOD):
#
#   invoke  (the default image, IMAGE_NAME:latest) a warm server: the container is started once
#           (offline, non-root, /input read-only); /health is polled until 200 (GC's cap: 300 s); then
#           for each case in turn /input is filled, POST /invoke must answer 201 and the outputs are
#           compared, and /input and /output are cleared, as GC's runtime wrapper does it. Cases: the
#           sample, a phantom, a broken scan (must answer non-2xx with its one-line reason as the
#           server's last log line, and leave no outputs), a second phantom (must still succeed). The
#           models must have been loaded once; SIGTERM must stop the server at once with exit 0.
#   exec    (IMAGE_NAME-exec:latest, built with --build-arg API_METHOD=exec) one container run per case
#           on test/input, as before, plus the phantoms and the broken scan.
#
# Every run: no network, the input mounted read-only, the image's non-root USER, a fresh empty tmpfs
# /tmp (and the GPU when there is one). The sample's outputs are compared with test/output:
#   pdac-likelihood.json   a bare number in [0, 1], |difference| <= 0.02
#   detection_map.mha      float32, the scan's size/spacing/origin/direction, max |difference| < 0.05
# the phantoms' outputs (with both methods) with exec's, the same way, and a broken case's one line
# with exec's (with both methods). It also checks the label, that the image's user is not root, that
# it has no CMD (Grand Challenge appends one to the ENTRYPOINT), and that the runs wrote nothing
# outside /output and /tmp (read-only root filesystem with docker/podman; a scan of the container's
# files with buildah).
#
#   ./test.sh [--no-build] [--model-mount]
#
#   --no-build     use the existing images
#   --model-mount  weights mounted at /opt/ml/model (GC's model tarball) are the ones used: a folder
#                  whose manifest is broken must fail with the weights error (exit 4, naming
#                  /opt/ml/model; in invoke mode the server exits without ever answering 200), and
#                  model.tar.gz made by export.sh, unpacked there, must reproduce the expected outputs
#
# Environment:
#   API_METHOD        both (default) | invoke | exec: which images to build and test
#   CONTAINER_ENGINE  docker | podman | buildah: builds with it and runs with it. Default: docker when
#                     its daemon answers; else podman builds and buildah runs (podman run needs a
#                     working OCI runtime; buildah's chroot isolation runs anywhere as root)
#   BASE_IMAGE        passed on to build.sh;  IMAGE_NAME (default pdac-panorama; exec: IMAGE_NAME-exec)
#   STORAGE_DRIVER    podman/buildah storage driver (default: the one podman uses)
#   GPUS              auto | 0 | 1: pass the GPU to docker/podman (auto: when nvidia-smi sees one)
#   RUN_TIMEOUT       seconds per run or case (default 1200, a GC challenge phase's default job limit)
#   HEALTH_TIMEOUT    seconds for the invoke server to answer /health 200 (default 300, GC's cap)
#   PYTHON            interpreter with SimpleITK for the comparison and the phantoms, which it makes with
#                     pdac.lab.phantom (default .venv/bin/python, python3)
#   EXPECTED_OUTPUT   folder with the expected outputs (default test/output)
#   KEEP_OUTPUT=1     keep the temporary output folders
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
REPO="$PWD"

IMAGE_NAME="${IMAGE_NAME:-pdac-panorama}"
RUN_TIMEOUT="${RUN_TIMEOUT:-1200}"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-300}"
INPUT="$REPO/test/input"
EXPECTED="${EXPECTED_OUTPUT:-$REPO/test/output}"
case "${API_METHOD:-both}" in
  both) methods=(exec invoke) ;;
  invoke | exec) methods=("$API_METHOD") ;;
  *) echo "test.sh: API_METHOD must be both, invoke or exec, got '$API_METHOD'" >&2; exit 2 ;;
esac
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
image_of() { if [[ "$1" == invoke ]]; then echo "$IMAGE_NAME:latest"; else echo "$IMAGE_NAME-exec:latest"; fi; }

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
log "build: $builder, run: $runner${STORAGE_DRIVER:+ (storage driver $STORAGE_DRIVER)}; API methods: ${methods[*]}"

# --- comparison interpreter, expected outputs, cases -------------------------------------------
py=""
for cand in "${PYTHON:-}" "$REPO/.venv/bin/python" python3; do
  if [[ -n "$cand" ]] && "$cand" -c "import SimpleITK, numpy" >/dev/null 2>&1; then py="$cand"; break; fi
done
[[ -n "$py" ]] || fail "no Python with SimpleITK and numpy for the comparison (set PYTHON=...)"
[[ -f "$EXPECTED/pdac-likelihood.json" && -f "$EXPECTED/images/pdac-detection-map/detection_map.mha" ]] \
  || fail "expected outputs missing in $EXPECTED"
scans=("$INPUT"/images/venous-ct/*.mha)
[[ ${#scans[@]} -eq 1 && -f "${scans[0]}" ]] || fail "expected one scan in $INPUT/images/venous-ct"

tmp_root="$(mktemp -d "${TMPDIR:-/tmp}/pdac-container-test.XXXXXX")"
ctr="" server="" netns_holder=""
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  stop_server >/dev/null 2>&1 || true
  if [[ -n "$ctr" ]]; then buildah "${store[@]}" rm "$ctr" >/dev/null 2>&1 || true; fi
  if [[ -n "$netns_holder" ]]; then kill "$netns_holder" 2>/dev/null || true; fi
  if [[ "${KEEP_OUTPUT:-0}" == 1 ]]; then log "outputs kept in $tmp_root"; else rm -rf "$tmp_root" || true; fi
}
trap cleanup EXIT

# GC input folders: the sample, two small phantoms and a broken scan; run in this order (a good case
# after the broken one).
CASES=(sample phantom1 broken phantom2)
mkdir -p "$tmp_root/cases"
cp -r "$INPUT" "$tmp_root/cases/sample"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$py" - "$tmp_root/cases" <<'PY' || fail "could not make the phantoms with $py (set PYTHON= to one with the project installed)"
import shutil, sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.lab.phantom import PhantomSpec, make_phantom

root = Path(sys.argv[1])
for name, seed in (("phantom1", 31), ("phantom2", 32)):
    image, _, _ = make_phantom(np.random.SeedSequence([seed, 0]), PhantomSpec(size="small"))
    folder = root / name / "images" / "venous-ct"
    folder.mkdir(parents=True)
    sitk.WriteImage(image, str(folder / f"{name}.mha"), useCompression=True)
    shutil.copyfile(root / "sample" / "inputs.json", root / name / "inputs.json")
broken = root / "broken" / "images" / "venous-ct"
broken.mkdir(parents=True)
(broken / "broken.mha").write_bytes(b"this is not a MetaImage\n" * 8)
PY
chmod -R a+rX "$tmp_root/cases"
case_scan() { local s=("$tmp_root/cases/$1"/images/venous-ct/*.mha); echo "${s[0]}"; }

# --- build -------------------------------------------------------------------------------------
if [[ $build -eq 1 ]]; then
  for method in "${methods[@]}"; do
    CONTAINER_ENGINE="$builder" IMAGE_NAME="${IMAGE_NAME}$([[ $method == exec ]] && echo -exec)" \
      API_METHOD="$method" ./build.sh
  done
fi

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

# --- image checks ------------------------------------------------------------------------------
# check_image METHOD: sets IMAGE and user; the label, USER and CMD checks.
check_image() {
  local method="$1" cmd label
  IMAGE="$(image_of "$method")"
  case "$runner" in
    docker | podman)
      user="$("$runner" "${store[@]}" image inspect --format '{{.Config.User}}' "$IMAGE")"
      cmd="$("$runner" "${store[@]}" image inspect --format '{{range .Config.Cmd}}{{println .}}{{end}}' "$IMAGE")"
      label="$("$runner" "${store[@]}" image inspect \
        --format '{{index .Config.Labels "org.grand-challenge.api-method"}}' "$IMAGE")"
      ;;
    buildah)
      user="$(buildah "${store[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")"
      cmd="$(buildah "${store[@]}" inspect --type image --format '{{range .OCIv1.Config.Cmd}}{{println .}}{{end}}' "$IMAGE")"
      label="$(buildah "${store[@]}" inspect --type image \
        --format '{{index .OCIv1.Config.Labels "org.grand-challenge.api-method"}}' "$IMAGE")"
      ;;
    *) fail "unknown CONTAINER_ENGINE '$runner' (docker, podman or buildah)" ;;
  esac
  case "$user" in
    "" | root | 0 | 0:* | root:*) fail "$IMAGE runs as root (USER '${user}'); Grand Challenge refuses that" ;;
  esac
  # GC's runtime wrapper runs ENTRYPOINT + CMD with Docker's rules: a CMD (e.g. one inherited from the
  # base image) would be appended to the entry point's arguments.
  [[ -z "$cmd" ]] || fail "$IMAGE has a CMD ($(echo "$cmd" | paste -sd ' ')): it would be appended to the ENTRYPOINT on Grand Challenge; clear it with CMD []"
  # GC reads the label case-insensitively; no label means exec.
  [[ "${label,,}" == "$method" ]] || fail "$IMAGE: label org.grand-challenge.api-method is '$label', not '$method'"
  log "image $IMAGE: label org.grand-challenge.api-method=$label, USER $user, no CMD"
}

# --- runs --------------------------------------------------------------------------------------
# use_image METHOD: checks the image and, for buildah, makes one working container for its runs (with
# vfs storage each one is a full copy of the image).
use_image() {
  check_image "$1"
  [[ "$runner" == buildah ]] || return 0
  if [[ -n "$ctr" ]]; then buildah "${store[@]}" rm "$ctr" >/dev/null; ctr=""; fi
  ctr="$(buildah "${store[@]}" from --pull-never "$IMAGE")"
  mapfile -t entrypoint < <(buildah "${store[@]}" inspect --type image \
    --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
  rootfs="$(buildah "${store[@]}" mount "$ctr")"
}
if [[ "$runner" == buildah ]]; then
  isolation="${BUILDAH_ISOLATION:-chroot}"
  if [[ "$isolation" == chroot ]]; then
    # chroot isolation shares the caller's network: take it away with a new network namespace, held
    # by a sleeping process so that the invoke server and the requests to it can share it.
    unshare -n true 2>/dev/null || fail "buildah with chroot isolation needs 'unshare -n' (root) for an offline run"
    unshare -n sleep infinity &
    netns_holder=$!
    sleep 0.2
    nsenter -t "$netns_holder" -n ip link set lo up || fail "cannot bring up the loopback of the offline network namespace"
    offline=(nsenter -t "$netns_holder" -n)
    net=()
  else
    offline=()
    net=(--network none)
    [[ " ${methods[*]} " != *" invoke "* ]] || fail "the invoke test with buildah needs BUILDAH_ISOLATION=chroot"
  fi
fi

# mounts_for INPUT OUTPUT [MODEL]: sets `mounts` (-v SRC:DST:MODE pairs).
mounts_for() {
  mkdir -p "$2"
  chmod 0777 "$2"   # the image's user is not the caller
  mounts=(-v "$1:/input:ro" -v "$2:/output:rw")
  if [[ -n "${3:-}" ]]; then mounts+=(-v "$3:/opt/ml/model:ro"); fi
}

# check_writes NAME: with buildah, files written outside /output and /tmp since NAME started?
# (/input, /output, /tmp and /opt/ml/model are mounts; directories are skipped because buildah creates
# the mount points; /etc and /run files are buildah's own)
check_writes() {
  [[ "$runner" == buildah ]] || return 0
  local written
  written="$(cd "$rootfs" && find . -xdev -newer "$tmp_root/$1.start" -not -type d \
    -not -path './tmp/*' -not -path './run/*' -not -path './dev/*' \
    -not -path './etc/hosts' -not -path './etc/hostname' -not -path './etc/resolv.conf' | head -20)"
  if [[ -n "$written" ]]; then
    log "run '$1' wrote files outside /output and /tmp:"
    echo "$written" >&2
    stray_writes=1
  fi
}

# run_image NAME OUTDIR [MODEL_DIR [UID:GID [INPUT_DIR]]]: runs the image's entrypoint once (exec) as
# the image's USER unless UID:GID is given; returns its exit status.
run_image() {
  local name="$1" out="$2" model="${3:-}" as="${4:-}" input="${5:-$INPUT}" rc=0 as_user=()
  mounts_for "$input" "$out" "$model"
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
      check_writes "$name"
      ;;
  esac
  log "run '$name': exit $rc after $((SECONDS - start)) s"
  return "$rc"
}

# last_line LOG: its last non-empty line; message LINE: without the `HH:MM:SS LEVEL logger: ` prefix.
# (buildah run's own trailer lines, `Error: exit status N` and `subprocess exited ...`, are not the image's)
last_line() { grep -v -E '^[[:space:]]*$|^Error: exit status [0-9]+$|^subprocess exited ' "$1" | tail -1; }
message() { sed -E 's/^[0-9:]{8} [A-Z]+ [^ :]+: //' <<<"$1"; }

# --- the invoke server ---------------------------------------------------------------------------
# One request, the way GC's runtime wrapper sends it (POST without a body), from inside the container's
# network: prints "STATUS BODY" on one line (STATUS 000: no connection).
HTTP_PY='import sys, urllib.error, urllib.request
method, url, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
req = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
try:
    with urllib.request.urlopen(req, timeout=timeout) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
except Exception as e:
    status, body = 0, repr(e).encode()
print(f"{status:03d}", " ".join(body.decode(errors="replace").split()))'

# start_server NAME INPUT OUTPUT [MODEL [UID:GID]]: the image's entrypoint in the background; sets `server`.
start_server() {
  local name="$1" as="${5:-}" as_user=()
  mounts_for "$2" "$3" "${4:-}"
  if [[ -n "$as" ]]; then as_user=(--user "$as"); fi
  server_name="$name"
  log "start the invoke server '$name'${as:+ as $as}"
  case "$runner" in
    docker | podman)
      server="$("$runner" "${store[@]}" run -d --platform linux/amd64 --network none --read-only \
        --tmpfs /tmp:rw,exec,mode=1777 "${as_user[@]}" "${gpu[@]}" "${mounts[@]}" "$IMAGE")"
      ;;
    buildah)
      touch "$tmp_root/$name.start"
      sleep 1
      local bmounts=()
      for ((i = 1; i < ${#mounts[@]}; i += 2)); do bmounts+=(--volume "${mounts[i]}"); done
      # Its own process group, so that SIGTERM reaches the server as GC's teardown sends it.
      setsid "${offline[@]}" buildah "${store[@]}" run --isolation "$isolation" --user "${as:-$user}" \
        --mount type=tmpfs,destination=/tmp "${bmounts[@]}" "$ctr" -- "${entrypoint[@]}" \
        >"$tmp_root/$name.log" 2>&1 &
      server=$!
      ;;
  esac
}
http() {
  case "$runner" in
    docker | podman) "$runner" "${store[@]}" exec "$server" python -c "$HTTP_PY" "$1" "http://127.0.0.1:4743$2" "$3" ;;
    buildah) "${offline[@]}" "$py" -c "$HTTP_PY" "$1" "http://127.0.0.1:4743$2" "$3" ;;
  esac
}
server_alive() {
  case "$runner" in
    docker | podman) [[ "$("$runner" "${store[@]}" inspect --format '{{.State.Running}}' "$server")" == true ]] ;;
    buildah) kill -0 "$server" 2>/dev/null ;;
  esac
}
server_log() {
  if [[ "$runner" != buildah ]]; then "$runner" "${store[@]}" logs "$server" >"$tmp_root/$server_name.log" 2>&1 || true; fi
  echo "$tmp_root/$server_name.log"
}
# wait_healthy: polls /health until 200 (returns 0) or the server exits / HEALTH_TIMEOUT passes (1);
# `seen` holds the statuses (000: no connection).
wait_healthy() {
  local deadline=$((SECONDS + HEALTH_TIMEOUT)) status
  seen=()
  while ((SECONDS < deadline)) && server_alive; do
    status="$(http GET /health 10 2>/dev/null | cut -d' ' -f1 || true)"
    seen+=("${status:-000}")
    [[ "$status" == 200 ]] && return 0
    sleep 1
  done
  return 1
}
# stop_server [TIMEOUT]: SIGTERM as GC's teardown sends it (SIGKILL after TIMEOUT s, default 5); sets
# `server_rc` and `stop_s`.
stop_server() {
  [[ -n "$server" ]] || return 0
  local start=$SECONDS
  case "$runner" in
    docker | podman)
      "$runner" "${store[@]}" stop -t "${1:-5}" "$server" >/dev/null 2>&1 || true
      server_rc="$("$runner" "${store[@]}" inspect --format '{{.State.ExitCode}}' "$server")"
      server_log >/dev/null
      "$runner" "${store[@]}" rm -f "$server" >/dev/null 2>&1 || true
      ;;
    buildah)
      # The server itself (GC signals its process group, in which it is alone); signalling buildah's own
      # processes too would make buildah exit 1 instead of passing the server's exit status on.
      local inner
      inner="$(pgrep -g "$server" -f '^(\S*/)?python[0-9.]* -m pdac\.serve' | head -1 || true)"
      kill -TERM -- "${inner:--$server}" 2>/dev/null || true
      for ((i = 0; i < ${1:-5} * 10; i++)); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$server" 2>/dev/null || true
      server_rc=0
      wait "$server" || server_rc=$?
      check_writes "$server_name"
      ;;
  esac
  stop_s=$((SECONDS - start))
  server=""
}
# server_exit: waits for a server that stops by itself; sets `server_rc`.
server_exit() {
  case "$runner" in
    docker | podman)
      server_rc="$(timeout "$HEALTH_TIMEOUT" "$runner" "${store[@]}" wait "$server" | tail -1)"
      server_log >/dev/null
      "$runner" "${store[@]}" rm -f "$server" >/dev/null 2>&1 || true
      ;;
    buildah)
      server_rc=0
      wait "$server" || server_rc=$?
      check_writes "$server_name"
      ;;
  esac
  server=""
}
# compare OUTDIR [EXPECTED_DIR [SCAN]]: outputs against test/output (default) and the scan's geometry.
compare() {
  "$py" - "$1" "${2:-$EXPECTED}" "${3:-${scans[0]}}" <<'PY'
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

# --- exec: one run per case ----------------------------------------------------------------------
status=0
stray_writes=0
test_exec() {
  local case rc
  if run_image exec "$tmp_root/exec" "" "" "$tmp_root/cases/sample"; then
    compare "$tmp_root/exec" || { status=1; log "exec: outputs differ from $EXPECTED"; }
  else
    status=1
    tail -30 "$tmp_root/exec.log" >&2
    return 0
  fi
  for case in phantom1 broken phantom2; do
    rc=0
    run_image "exec-$case" "$tmp_root/exec-$case" "" "" "$tmp_root/cases/$case" || rc=$?
    if [[ "$case" == broken ]]; then
      if [[ $rc -eq 0 || -n "$(find "$tmp_root/exec-$case" -type f)" ]]; then
        status=1; log "exec: the broken case should fail and leave no outputs (exit $rc)"
      else
        log "exec: broken case refused (exit $rc): $(last_line "$tmp_root/exec-$case.log")"
      fi
    elif [[ $rc -ne 0 ]]; then
      status=1; tail -30 "$tmp_root/exec-$case.log" >&2
    else
      compare "$tmp_root/exec-$case" "$tmp_root/exec-$case" "$(case_scan "$case")" >/dev/null || status=1
    fi
  done

  [[ $model_mount -eq 1 && $status -eq 0 ]] || return 0
  # 1. A weights folder with a broken manifest at /opt/ml/model must be the one used, and refused.
  rc=0
  run_image exec-broken-model "$tmp_root/exec-broken-out" "$broken_model" || rc=$?
  if [[ $rc -ne 4 ]] || ! grep -q "/opt/ml/model" "$tmp_root/exec-broken-model.log"; then
    status=1
    log "exec: a broken /opt/ml/model should fail with the weights error (exit 4, naming /opt/ml/model); got exit $rc:"
    tail -5 "$tmp_root/exec-broken-model.log" >&2
  elif [[ -n "$(find "$tmp_root/exec-broken-out" -type f)" ]]; then
    status=1
    log "exec: a failed run left files in /output"
  else
    log "exec: broken /opt/ml/model refused: $(grep -m1 -o 'weights.*' "$tmp_root/exec-broken-model.log" || true)"
  fi
  # 2. GC's model tarball, unpacked at /opt/ml/model, gives the expected outputs; this run uses an
  #    arbitrary uid, as `docker run --user "$(id -u):$(id -g)"` on one's own scans does.
  if run_image exec-model-tarball "$tmp_root/exec-model-out" "$tmp_root/model" 12345:12345; then
    compare "$tmp_root/exec-model-out" || status=1
  else
    status=1
    tail -30 "$tmp_root/exec-model-tarball.log" >&2
  fi
}

# --- invoke: one warm server, one request per case ------------------------------------------------
# invoke_case CASE: fill /input, POST /invoke, check, clear /input and /output (as GC's wrapper does).
invoke_case() {
  local case="$1" answer code body error line reference
  find "$inv_in" -mindepth 1 -delete
  cp -r "$tmp_root/cases/$case/." "$inv_in/"
  chmod -R a+rX "$inv_in"
  answer="$(http POST /invoke "$RUN_TIMEOUT")" || true
  code="${answer%% *}" body="${answer#* }"
  line="$(last_line "$(server_log)")"
  if [[ "$case" == broken ]]; then
    error="$("$py" -c 'import json, sys; print(json.loads(sys.argv[1]).get("error", ""))' "$body" 2>/dev/null || true)"
    if [[ "$code" == 2* || "$code" == 000 ]]; then
      status=1; log "invoke: the broken case should answer non-2xx; got $answer"
    elif [[ -z "$error" || "$(message "$line")" != "$error" ]]; then
      status=1; log "invoke: the broken case's reason should be the server's last line; body $body, last line: $line"
    elif [[ -f "$tmp_root/exec-broken.log" && "$(message "$(last_line "$tmp_root/exec-broken.log")")" != "$error" ]]; then
      status=1; log "invoke: the broken case's line differs from exec's: $error"
    elif [[ -n "$(find "$inv_out" -type f)" ]]; then
      status=1; log "invoke: the broken case left files in /output"
    else
      log "invoke: broken case refused ($code): $line"
    fi
  elif [[ "$code" != 201 ]]; then
    status=1; log "invoke: case '$case' answered $answer (201 expected); last line: $line"
  else
    if [[ "$case" == sample ]]; then
      reference="$EXPECTED"
    elif [[ -d "$tmp_root/exec-$case" ]]; then
      reference="$tmp_root/exec-$case"   # the exec image's outputs on the same case
    else
      reference="$inv_out"   # no exec run: validity only
    fi
    if compare "$inv_out" "$reference" "$(case_scan "$case")"; then
      log "invoke: case '$case' 201, outputs match $([[ "$reference" == "$inv_out" ]] && echo "(valid; no exec reference)" || echo "$reference")"
    else
      status=1; log "invoke: case '$case': outputs differ from $reference"
    fi
  fi
  find "$inv_in" "$inv_out" -mindepth 1 -delete
}

test_invoke() {
  local case loaded
  inv_in="$tmp_root/invoke-in" inv_out="$tmp_root/invoke-out"
  mkdir -p "$inv_in"
  chmod 0755 "$inv_in"
  start_server invoke "$inv_in" "$inv_out"
  local start=$SECONDS
  if ! wait_healthy; then
    status=1
    log "invoke: no /health 200 within ${HEALTH_TIMEOUT} s (answers: ${seen[*]:-none})"
    tail -30 "$(server_log)" >&2
    stop_server
    return 0
  fi
  log "invoke: /health 200 after $((SECONDS - start)) s (answers before: $(printf '%s\n' "${seen[@]}" | sort | uniq -c | paste -sd ' '))"
  for case in "${CASES[@]}"; do invoke_case "$case"; done
  loaded="$(grep -c "models loaded in" "$(server_log)" || true)"
  [[ "$loaded" == 1 ]] || { status=1; log "invoke: the models were loaded $loaded times (once expected)"; }
  stop_server
  if [[ "$server_rc" != 0 || $stop_s -ge 5 ]]; then
    status=1; log "invoke: SIGTERM between cases should stop the server at once with exit 0; exit $server_rc after $stop_s s"
  else
    log "invoke: SIGTERM: exit 0 after $stop_s s"
  fi

  [[ $model_mount -eq 1 && $status -eq 0 ]] || return 0
  # 1. A broken /opt/ml/model: the server exits 4 with the weights error as its last line, never 200.
  start_server invoke-broken-model "$inv_in" "$inv_out" "$broken_model"
  if wait_healthy; then
    status=1; log "invoke: a broken /opt/ml/model answered /health 200"
    stop_server
  else
    server_exit
    line="$(last_line "$tmp_root/invoke-broken-model.log")"
    if [[ "$server_rc" != 4 || "$line" != *"/opt/ml/model"* ]]; then
      status=1; log "invoke: a broken /opt/ml/model should exit 4 naming /opt/ml/model; got exit $server_rc: $line"
    else
      log "invoke: broken /opt/ml/model refused (exit 4, /health: $(printf '%s\n' "${seen[@]}" | sort -u | paste -sd ' ')): $line"
    fi
  fi
  # 2. model.tar.gz unpacked at /opt/ml/model, an arbitrary uid: the sample's expected outputs.
  start_server invoke-model-tarball "$inv_in" "$inv_out" "$tmp_root/model" 12345:12345
  if wait_healthy; then
    invoke_case sample
  else
    status=1; log "invoke: no /health 200 with model.tar.gz at /opt/ml/model"; tail -30 "$(server_log)" >&2
  fi
  stop_server
}

if [[ $model_mount -eq 1 ]]; then
  broken_model="$tmp_root/broken-model"
  mkdir -p "$broken_model"
  echo '{"algorithm": "sha256", "files": {"lesion/fold_0/checkpoint_final.pth": "0000"}}' >"$broken_model/manifest.json"
  chmod -R a+rX "$broken_model"
  ./export.sh --model-only "$tmp_root" >/dev/null
  mkdir -p "$tmp_root/model"
  tar -C "$tmp_root/model" -xzf "$tmp_root/model.tar.gz"
  chmod -R a+rX "$tmp_root/model"
fi

for method in "${methods[@]}"; do
  use_image "$method"
  if [[ "$method" == exec ]]; then test_exec; else test_invoke; fi
done

if [[ $stray_writes -ne 0 ]]; then
  status=1
fi
if [[ $status -eq 0 ]]; then
  log "PASS (${methods[*]})"
else
  log "FAIL${KEEP_OUTPUT:+ (logs in $tmp_root)}"
  [[ "${KEEP_OUTPUT:-0}" == 1 ]] || log "rerun with KEEP_OUTPUT=1 to keep the logs and outputs"
fi
exit "$status"
