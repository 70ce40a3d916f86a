#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 machine (run as root):
# Debian packages, the Docker engine, this Python package, and the toolchain image.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '==> %s\n' "$*"; }

HOST_PACKAGES=(
  docker.io debootstrap ca-certificates
  qemu-system-x86 qemu-system-arm
  xz-utils zstd cpio patch
)

missing=()
for p in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The engine: started only when none answers, with the flags these machines require.
if ! docker version >/dev/null 2>&1; then
  log "starting dockerd"
  nohup dockerd --bridge=none --iptables=false --ip-forward=false >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker version >/dev/null 2>&1 && break
    sleep 1
  done
  docker version >/dev/null 2>&1 || { echo "setup: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2; exit 1; }
fi

log "installing the builder Python package"
python3 -m pip install -q --root-user-action=ignore -e '.[dev]'
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true

log "ensuring the toolchain image"
python3 -m builder toolchain ensure

log "ready: run 'doit kernel initramfs' or 'builder doctor'"
