#!/usr/bin/env bash
# Build the first-party and the test-fixture plugins as static (static-pie, glibc) binaries
# that run in an empty root filesystem, into target/plugins/<name>. Uses its own target directory
# (target/static) so the RUSTFLAGS change does not invalidate the normal build cache.
#
#   artifacts/build-plugins.sh [plugin ...]
#
# Default: every crate under artifacts/plugins/ and tests/fixtures/plugins/. A name is a
# package name (each plugin's directory is named after its package).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
triple=x86_64-unknown-linux-gnu
static_dir="$root/target/static"
out_dir="$root/target/plugins"

if [ "$#" -gt 0 ]; then
  plugins=("$@")
else
  plugins=()
  for d in artifacts/plugins/*/ tests/fixtures/plugins/*/; do
    [ -f "$d/Cargo.toml" ] && plugins+=("$(basename "$d")")
  done
fi

args=()
for p in "${plugins[@]}"; do args+=(-p "$p"); done

start=$(date +%s)
# The workspace release profile keeps line tables (debug = 1); plugin images ship
# stripped binaries instead (profile overrides through the environment).
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$static_dir" \
  CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --locked --target "$triple" "${args[@]}"
echo "static build took $(( $(date +%s) - start )) s" >&2

mkdir -p "$out_dir"
for p in "${plugins[@]}"; do
  bin="$static_dir/$triple/release/$p"
  # Refuse anything that would need a dynamic loader at run time.
  if readelf -l "$bin" 2>/dev/null | grep -q 'INTERP'; then
    echo "error: $bin has a program interpreter (dynamically linked)" >&2
    exit 1
  fi
  if readelf -d "$bin" 2>/dev/null | grep -q '(NEEDED)'; then
    echo "error: $bin needs shared libraries" >&2
    exit 1
  fi
  install -m 0755 "$bin" "$out_dir/$p"
  echo "$out_dir/$p"
done
