# Helpers sourced into every build step by the framework. SOURCE_DATE_EPOCH is always set.
# They carry the reproducibility normalizations so that recipes never have to spell them out.

# Fail the build with one line that the host shows as the error.
builder_error() {
  printf '##builder-error## %s\n' "$*" >&2
  exit 1
}

# Hand FILE to the host as the report NAME of a step about to fail: the host writes it to
# .builder/reports/TASK/NAME and names it in the error (a failed build exports nothing else).
builder_report() {
  sed "s/^/##builder-report:$1## /" "$2" >&2
}

# Apply DIR/*.patch in C-locale sorted order with -p1 and zero fuzz; a failing patch is named.
# LABEL says where the patches come from in the project (for the error message).
builder_apply_patches() {
  dir=$1
  label=${2:-$1}
  [ -d "$dir" ] || return 0
  for name in $(ls -1 "$dir" | LC_ALL=C sort); do
    case $name in *.patch) ;; *) continue ;; esac
    echo "applying patch $name"
    patch -p1 --fuzz=0 --forward --batch --no-backup-if-mismatch <"$dir/$name" ||
      builder_error "patch $name does not apply ($label: sorted order, -p1, no fuzz)"
  done
}

# Set every mtime under DIR to SOURCE_DATE_EPOCH.
builder_clamp_mtimes() {
  find "$1" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
}

# Reproducible newc cpio of DIR's contents on stdout: sorted, mtimes at SDE, owned by 0:0.
builder_cpio() {
  builder_clamp_mtimes "$1"
  (cd "$1" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --reproducible --format=newc --owner=0:0 --quiet)
}

# Reproducible POSIX tar of DIR's contents on stdout.
builder_tar() {
  (cd "$1" && LC_ALL=C tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf - .)
}

# Compressors pinned to one thread mode (xz/zstd output differs between single- and multi-threaded).
# The kernel's initramfs unpacker needs xz's crc32 check and a small dictionary.
builder_xz() {
  xz -T1 --check=crc32 --lzma2=preset=9,dict=1MiB -c
}
builder_zstd() {
  zstd -T1 -19 -q -c
}
