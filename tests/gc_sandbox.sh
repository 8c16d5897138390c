#!/usr/bin/env bash
# Runs a command (as root) on a throw-away copy of this machine's root filesystem laid out like Grand
# Challenge's patched image: the image's user exists (as the Dockerfile creates it), /input and
# /output are 0777 folders (the layer GC adds), and the folders leading to OPEN_PATHS can be traversed
# by that user. Nothing on the host changes: / is an overlay whose writes go to a tmpfs, in private
# mount and PID namespaces that end with the command (processes left behind are killed with it).
#
#   gc_sandbox.sh SCRATCH USER HOME WORKDIR OPEN_PATHS -- COMMAND...
#
#   SCRATCH     an empty folder for the overlay (left empty afterwards)
#   USER HOME   the image's user and its home folder
#   WORKDIR     the command's working directory (the image's WORKDIR)
#   OPEN_PATHS  colon-separated paths whose parent folders get o+x (e.g. the interpreter under /root)
#
# Needs root, util-linux's unshare and overlayfs.
set -euo pipefail

if [[ "${GC_SANDBOX_INSIDE:-}" != 1 ]]; then
  GC_SANDBOX_INSIDE=1 exec unshare --mount --propagation private --pid --fork --kill-child "$BASH" "$0" "$@"
fi
unset GC_SANDBOX_INSIDE
[[ $# -ge 7 && "$6" == -- ]] || { echo "usage: gc_sandbox.sh SCRATCH USER HOME WORKDIR OPEN_PATHS -- COMMAND..." >&2; exit 2; }
scratch="$1" user="$2" home="$3" workdir="$4" open_paths="$5"
shift 6

mount -t tmpfs -o mode=0755 gc-sandbox "$scratch"
mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
root="$scratch/root"
mount -t overlay gc-sandbox -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"

if ! chroot "$root" getent passwd "$user" >/dev/null; then
  chroot "$root" getent group "$user" >/dev/null || chroot "$root" groupadd --system "$user"
  chroot "$root" useradd --system --no-log-init --gid "$user" --home-dir "$home" --no-create-home "$user"
fi
mkdir -p "$root/input" "$root/output"
chmod 0777 "$root/input" "$root/output"

# The overlay shows the root filesystem only: a path on another mount is bound in as it is (its own
# folders are then left alone, as a chmod there would reach the host).
IFS=: read -r -a paths <<<"$open_paths"
for path in "${paths[@]}"; do
  mount_point="$(findmnt --noheadings --output TARGET --target "$path")"
  if [[ "$mount_point" != / ]] && ! mountpoint -q "$root$mount_point"; then
    mkdir -p "$root$mount_point"
    mount --rbind "$mount_point" "$root$mount_point"
  fi
  dir="$(dirname "$path")"
  while [[ "$dir" != / ]]; do
    if [[ "$mount_point" == / || "$dir/" != "$mount_point/"* ]]; then
      chmod o+x "$root$dir"
    fi
    dir="$(dirname "$dir")"
  done
done

# shellcheck disable=SC2016  # expanded by the inner shell
exec chroot "$root" /bin/sh -c 'cd "$0" && exec "$@"' "$workdir" "$@"
