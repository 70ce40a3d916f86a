#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 (bookworm) or Debian 13 (trixie) machine (run as root):
# Debian packages, the Docker engine, this Python package, and the toolchain image.
#
#   ./setup.sh             everything
#   ./setup.sh --simulate  only the Debian packages, resolved with `apt-get install --simulate`: apt is
#                          configured as a real run would (bookworm: the pinned trixie source, see below)
#                          and its lists updated, but nothing is installed and nothing else is done.
set -euo pipefail
cd "$(dirname "$0")"
export LC_ALL=C

log() { printf '==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

simulate=0
case "${1:-}" in
  "") ;;
  --simulate) simulate=1 ;;
  *) echo "usage: $0 [--simulate]" >&2; exit 2 ;;
esac

# mmdebstrap makes the toolchain image (builder/toolchain.py).
COMMON_PACKAGES=(
  ca-certificates mmdebstrap
  qemu-system-x86 qemu-system-arm
  ovmf qemu-efi-aarch64 qemu-utils   # boot media: UEFI firmware for amd64 (OVMF) and arm64 (AAVMF), qemu-img
  xz-utils zstd cpio patch
  docker-registry   # the tests' loopback registry (PUSH=1, PKG_NAME=): started by the tests, never as a service
  skopeo            # the tests read back what builder pushed with another registry client
  openssl           # builder check-signatures verifies module signatures against a certificate
  fdisk             # sfdisk: the tests check images.sh's GRUB install and builder meta's GPT reading with it
)

# The BuildKit client side: /usr/bin/docker (docker.io on 12, docker-cli on 13) and the buildx plugin,
# which a docker client >= 23 (such as /usr/local/bin/docker) needs for any BuildKit build.
# Debian 12 has no docker-buildx: it comes from trixie, pinned so that nothing else ever does.
codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
case "$codename" in
  bookworm) DOCKER_PACKAGES=(docker.io docker-buildx) ;;
  trixie) DOCKER_PACKAGES=(docker.io docker-cli docker-buildx) ;;  # docker.io 26 only recommends the other two
  *) die "unsupported release '${codename:-unknown}' (VERSION_CODENAME in /etc/os-release): Debian 12 (bookworm) or 13 (trixie) expected" ;;
esac
PACKAGES=("${DOCKER_PACKAGES[@]}" "${COMMON_PACKAGES[@]}")

BUILDX_SOURCE=/etc/apt/sources.list.d/builder-trixie-buildx.list
BUILDX_PREFERENCES=/etc/apt/preferences.d/builder-trixie-buildx

# The mirror URI of the first enabled 'deb' entry for suite $1 with component main, in apt's one-line
# (.list) or deb822 (.sources) format - read here at run time, never written into this project.
# awk, not a library: this runs before any Python package is installed (it is what installs them) and bash
# has no deb822 parser. builder/variables.py reads the same files with python-debian, and
# tests/unit/test_setup_apt.py checks that both find the same mirror.
LIST_AWK='{
  sub(/#.*/, ""); gsub(/\[[^]]*\]/, "")
  n = split($0, w, " ")
  if (n < 4 || w[1] != "deb" || w[3] != suite || w[2] !~ /^(https?:\/\/|file:)/) next
  for (i = 4; i <= n; i++) if (w[i] == "main") { sub(/\/+$/, "", w[2]); print w[2]; exit }
}'
DEB822_AWK='function has(list, word,   n, a, i) {
  n = split(list, a, " "); for (i = 1; i <= n; i++) if (a[i] == word) return 1; return 0
}
BEGIN { RS = ""; FS = "\n" }
{
  split("", f); key = ""
  for (i = 1; i <= NF; i++) {
    if ($i ~ /^#/) continue
    if ($i ~ /^[ \t]/) { if (key != "") f[key] = f[key] " " $i; continue }  # a folded field goes on
    if (index($i, ":") == 0) { key = ""; continue }
    key = tolower(substr($i, 1, index($i, ":") - 1)); gsub(/[ \t]/, "", key)
    f[key] = substr($i, index($i, ":") + 1)
  }
  if (tolower(f["enabled"]) ~ /^[ \t]*(no|false|0)[ \t]*$/) next
  if (!has(f["types"], "deb") || !has(f["suites"], suite) || !has(f["components"], "main")) next
  n = split(f["uris"], u, " ")
  for (i = 1; i <= n; i++) if (u[i] ~ /^(https?:\/\/|file:)/) { sub(/\/+$/, "", u[i]); print u[i]; exit }
}'
apt_mirror() {
  local suite=$1 file uri
  local files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for file in /etc/apt/sources.list.d/*; do
    case "$file" in *.list | *.sources) files+=("$file") ;; esac
  done
  for file in "${files[@]}"; do
    case "$file" in
      *.sources) uri=$(awk -v suite="$suite" "$DEB822_AWK" "$file") ;;
      *) uri=$(awk -v suite="$suite" "$LIST_AWK" "$file") ;;
    esac
    if [ -n "$uri" ]; then
      printf '%s\n' "$uri"
      return 0
    fi
  done
  return 1
}

# Write $2 (plus a newline) to $1 unless it already holds exactly that; true when the file changed.
write_if_changed() {
  if [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; then
    return 1
  fi
  printf '%s\n' "$2" >"$1.new"
  mv "$1.new" "$1"
}

if [ "$codename" = bookworm ]; then
  mirror=$(apt_mirror bookworm) ||
    die "no enabled 'deb' entry for bookworm main in /etc/apt/sources.list or /etc/apt/sources.list.d/ (needed to add trixie's docker-buildx from the same mirror)"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  options=""
  [ -f "$keyring" ] && options=" [signed-by=$keyring]"
  # The pin first: a trixie source without it would make every trixie package an upgrade candidate.
  write_if_changed "$BUILDX_PREFERENCES" "Explanation: builder's setup.sh: from trixie, only docker-buildx (absent from bookworm)
Package: docker-buildx
Pin: release n=trixie
Pin-Priority: 500

Explanation: builder's setup.sh: nothing else from trixie, ever
Package: *
Pin: release n=trixie
Pin-Priority: -1" || true
  write_if_changed "$BUILDX_SOURCE" "# builder's setup.sh: trixie, for docker-buildx only (pinned in $BUILDX_PREFERENCES)
deb$options $mirror trixie main" || true
fi

if [ "$simulate" = 1 ]; then
  log "simulating on $codename: apt-get install --simulate ${PACKAGES[*]}"
  apt-get update -qq
  out=$(DEBIAN_FRONTEND=noninteractive apt-get install --simulate --no-install-recommends "${PACKAGES[@]}") ||
    die "apt cannot resolve: ${PACKAGES[*]}"
  names=" ${PACKAGES[*]} "
  printf '%s\n' "$out" | awk -v names="$names" '
    /^Inst / {
      if (index(names, " " $2 " ")) print
      s = $0; sub(/.*\(/, "", s); split(s, a, " "); count[a[2]]++
    }
    /newly installed/ { summary = $0 }
    END { print summary; for (o in count) print "  from " o ": " count[o] " packages" }'
  exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages on $codename: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# docker-registry's package starts a registry on :5000 under systemd; the tests start their own on 127.0.0.1
if [ -d /run/systemd/system ] && systemctl is-enabled --quiet docker-registry 2>/dev/null; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

# Both clients must find the buildx plugin: the project builds with 'docker buildx build' when it can.
for client in /usr/bin/docker /usr/local/bin/docker; do
  if [ "$client" = /usr/bin/docker ] || [ -x "$client" ]; then
    "$client" buildx version >/dev/null 2>&1 ||
      die "'$client buildx version' fails: the docker-buildx plugin is missing or unusable (dpkg -L docker-buildx; apt-cache policy docker-buildx)"
  fi
done

# The engine: started only when none answers, with the flags these machines require. BuildKit's cache is
# garbage-collected beyond 40 GB (least recently used first): every kernel build keeps its objects there, and
# repeated --no-cache test runs would otherwise fill the disk. A daemon.json already there is left alone.
if [ ! -e /etc/docker/daemon.json ]; then
  mkdir -p /etc/docker
  printf '%s\n' '{"builder": {"gc": {"enabled": true, "defaultKeepStorage": "40GB"}}}' >/etc/docker/daemon.json
fi
if ! docker version >/dev/null 2>&1; then
  log "starting dockerd"
  nohup dockerd --bridge=none --iptables=false --ip-forward=false >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker version >/dev/null 2>&1 && break
    sleep 1
  done
  docker version >/dev/null 2>&1 || die "dockerd did not answer within 60 s; see /var/log/dockerd.log"
fi

log "installing the builder Python package"
python3 -m pip install -q --root-user-action=ignore -e '.[dev]'
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true

log "ensuring the toolchain image"
python3 -m builder toolchain ensure
log "ensuring the imager image (boot media are assembled in it)"
python3 -m builder toolchain ensure --imager

log "ready: run 'doit kernel initramfs' or 'builder doctor'"
