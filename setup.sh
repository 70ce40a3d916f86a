#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 (bookworm) or Debian 13 (trixie) machine (run as root):
# Debian packages, the Docker engine, this Python package, and the toolchain image.
#
#   ./setup.sh                everything
#   ./setup.sh --simulate     only the Debian packages, resolved with `apt-get install --simulate`: apt is
#                             configured as a real run would (bookworm: the pinned trixie source, see below)
#                             and its lists updated, but nothing is installed and nothing else is done.
#   ./setup.sh --python-only  only the Python side (no apt, no engine, no images; python3 and python3-venv must
#                             be installed): the virtual environment .venv, made by python3 from PATH, with this
#                             package and its dev tools in it, and doit and builder linked into /usr/local/bin.
#                             What tests/integration/test_setup_chroot.py runs in Debian 12 and 13 chroots.
#
# Python: Debian's python3 is externally managed (PEP 668) and refuses `pip install` outside a virtual
# environment, so the package goes into .venv (git-ignored), never into python3's own site-packages.
set -euo pipefail
cd "$(dirname "$0")"
export LC_ALL=C

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

USAGE="usage: ./setup.sh [--simulate | --python-only]"
simulate=0
python_only=0
usage_error() { printf 'error: %s (%s)\n' "$1" "$USAGE" >&2; exit 2; }
case "$#:${1:-}" in
  0:) ;;
  1:--simulate) simulate=1 ;;
  1:--python-only) python_only=1 ;;
  1:*) usage_error "unknown option '$1'" ;;
  *) usage_error "one option at most, got $#: $*" ;;
esac

# mmdebstrap makes the toolchain image (builder/build/toolchain.py).
COMMON_PACKAGES=(
  ca-certificates mmdebstrap
  qemu-system-x86 qemu-system-arm
  ovmf qemu-efi-aarch64 qemu-utils   # boot media: UEFI firmware for amd64 (OVMF) and arm64 (AAVMF), qemu-img
  xz-utils zstd cpio patch
  docker-registry   # the tests' loopback registry (PUSH=1, PKG_NAME=): started by the tests, never as a service
  skopeo            # the tests read back what builder pushed with another registry client
  openssl           # builder check-signatures verifies module signatures against a certificate
  fdisk             # sfdisk: the tests check the media module's GRUB install and builder meta's GPT reading with it
  python3 python3-venv  # .venv is made by Debian's python3: its venv module and ensurepip are python3-venv
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

# --- the Python side -------------------------------------------------------------------------------------
# .venv: made by python3 from PATH (Debian's own on a stock machine; a pyenv user's .python-version here says
# "system" too), and recorded in $VENV_RECORD: the python it was made by and the project path its scripts'
# #! lines name. It is reused while both still hold and its python runs; otherwise it is made again.
PROJECT=$(pwd -P)
VENV=$PROJECT/.venv
VENV_RECORD=$VENV/builder-setup.txt
LINK_DIR=/usr/local/bin  # before /usr/bin on Debian's PATH; the 'doit' and 'builder' the README's commands run
LINKED=(doit builder)

# "python REALPATH MAJOR.MINOR" of the interpreter $1
python_identity() {
  "$1" -c 'import os, sys; print("python", os.path.realpath(sys.executable), "%d.%d" % sys.version_info[:2])'
}

# Why .venv cannot be reused (empty: it can); dies when .venv is something setup did not make.
venv_stale() {
  local want_python=$1 record minor
  if [ ! -e "$VENV" ] && [ ! -L "$VENV" ]; then
    echo "there is none"
    return
  fi
  [ -d "$VENV" ] && [ ! -L "$VENV" ] && [ -f "$VENV/pyvenv.cfg" ] ||
    die "$VENV is not a virtual environment (a directory with pyvenv.cfg), so setup.sh leaves it alone: move it away, setup.sh makes the project's virtual environment there"
  if [ ! -f "$VENV_RECORD" ]; then
    echo "it has no record of how it was made ($VENV_RECORD)"
    return
  fi
  record=$(cat "$VENV_RECORD")
  if [ "$(sed -n 1p <<<"$record")" != "$want_python" ]; then
    echo "it was made by another python ($(sed -n 1p <<<"$record"); python3 is now $want_python)"
  elif [ "$(sed -n 2p <<<"$record")" != "project $PROJECT" ]; then
    echo "it was made for another directory ($(sed -n 2p <<<"$record" | cut -d' ' -f2-))"
  elif ! minor=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
    echo "its python no longer runs"
  elif [ "$minor" != "${want_python##* }" ]; then
    echo "its python is now $minor, its packages are for ${want_python##* }"
  fi
}

python_step() {
  local python want_python why out packages name link target current found
  python=$(command -v python3) || die "no python3 on PATH: apt-get install python3 python3-venv"
  want_python=$(python_identity "$python") || die "$python does not run"
  why=$(venv_stale "$want_python") || exit 1
  if [ -n "$why" ]; then
    log "making the virtual environment $VENV with $python (${want_python#python }): $why"
    rm -rf "$VENV"
    if ! out=$("$python" -m venv "$VENV" 2>&1); then
      rm -rf "$VENV"
      case "$out" in
        *ensurepip*) die "'$python -m venv' cannot install pip into $VENV (no ensurepip): apt-get install python3-venv" ;;
        *) die "'$python -m venv $VENV' failed: $(grep -m1 . <<<"$out")" ;;
      esac
    fi
    printf '%s\nproject %s\n' "$want_python" "$PROJECT" >"$VENV_RECORD"
  fi

  # pip runs again only when pyproject.toml changed since the last install into this .venv (or the install
  # is not there: -I, so that the project's own builder/ next to it does not count)
  packages="packages $(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ "$(sed -n 3p "$VENV_RECORD")" = "$packages" ] &&
    "$VENV/bin/python" -I -c 'import sys, builder, doit, pytest; sys.exit(builder.__file__ != sys.argv[1])' \
      "$PROJECT/builder/__init__.py" >/dev/null 2>&1; then
    log "the builder Python package is installed in $VENV (pyproject.toml unchanged)"
  else
    log "installing the builder Python package into $VENV: pip install -e '.[dev]'"
    "$VENV/bin/python" -m pip install -q --root-user-action=ignore -e '.[dev]' ||
      die "pip install -e '.[dev]' into $VENV failed (pip's messages above)"
    printf '%s\nproject %s\n%s\n' "$want_python" "$PROJECT" "$packages" >"$VENV_RECORD"
  fi
  # The project's own modules compiled, as pip compiles what it installs into site-packages (an editable
  # install is not): a no-op run under PYTHONDONTWRITEBYTECODE=1 (many CI and container environments) would
  # otherwise compile builder/ from source every time, a third of its cost. Stale ones are recompiled by
  # Python itself; __pycache__/ is in .gitignore.
  "$VENV/bin/python" -m compileall -q -j 0 builder dodo.py >/dev/null ||
    log "compiling builder/ failed (a no-op run is slower, never wrong)"

  # doit and builder on the PATH: links; one that is there is replaced only when it leads into a .venv (this
  # checkout's or another's: the last set-up wins), anything else there is someone else's
  for name in "${LINKED[@]}"; do
    link=$LINK_DIR/$name
    target=$VENV/bin/$name
    [ -x "$target" ] || die "$target is missing after pip install: remove $VENV and run ./setup.sh again"
    current=$(readlink "$link" 2>/dev/null || true)
    if { [ -e "$link" ] || [ -L "$link" ]; } && [[ "$current" != */.venv/bin/"$name" ]]; then
      die "$link is not a link into a project's .venv (it is someone else's): move it away, so that $link -> $target"
    fi
    if [ "$current" != "$target" ]; then
      log "linking $link -> $target${current:+ (was -> $current)}"
      mkdir -p "$LINK_DIR"
      ln -sfn "$target" "$link.builder-new"
      mv -Tf "$link.builder-new" "$link"
    fi
  done

  # The README's next command runs in the caller's shell, with this PATH: it must find these links.
  for name in "${LINKED[@]}"; do
    found=$(resolve_command "$name")
    [ "$found" = "$(realpath "$VENV/bin/$name")" ] ||
      die "'$name' on PATH runs ${found:-nothing}, not $VENV/bin/$name: put $LINK_DIR first in PATH (or run $VENV/bin/$name)"
  done
}

# The real program that typing $1 runs: the first on PATH, through a pyenv shim to what pyenv picks for it.
resolve_command() {
  local found root
  found=$(type -P "$1") || return 0
  if grep -qs 'libexec/pyenv" exec' "$found"; then
    root=$(dirname "$(dirname "$found")")
    found=$(PYENV_ROOT=$root "$root/libexec/pyenv" which "$1" 2>/dev/null) || return 0
  fi
  realpath "$found"
}

if [ "$python_only" = 1 ]; then
  python_step
  log "ready: run 'doit list' or 'doit kernel initramfs'"
  exit 0
fi

BUILDX_SOURCE=/etc/apt/sources.list.d/builder-trixie-buildx.list
BUILDX_PREFERENCES=/etc/apt/preferences.d/builder-trixie-buildx

# The mirror URI of the first enabled 'deb' entry for suite $1 with component main, in apt's one-line
# (.list) or deb822 (.sources) format - read here at run time, never written into this project.
# awk, not a library: this runs before any Python package is installed (it is what installs them) and bash
# has no deb822 parser. builder/model/variables.py reads the same files with python-debian, and
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

python_step

log "ensuring the toolchain image"
"$VENV/bin/python" -m builder toolchain ensure
log "ensuring the imager image (boot media are assembled in it)"
"$VENV/bin/python" -m builder toolchain ensure --imager

log "ready: run 'doit kernel initramfs' or 'builder doctor'"
