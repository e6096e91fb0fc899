#!/usr/bin/env bash
# Builds byok-relay reproducibly and prints its SHA-256, so anyone can check
# that a binary is the source it claims to be.
#
#   scripts/repro-build.sh [COMMIT]     a commit of this repository (default HEAD)
#   scripts/repro-build.sh --worktree   the working tree as it is now (tracked files
#                                       and new ones that are not ignored)
#   options: --twice        build twice, in two directories, a second apart, and fail
#                           unless both binaries are identical (scripts/test.sh does this)
#            --out FILE     keep a copy of the binary
#            REPRO_JOBS=N   parallel jobs (default 2)
#
# The source is exported once (`git archive`) and built in a fresh temporary
# directory: Release, Ninja, byok-relay only, tests off, SOURCE_DATE_EPOCH = the
# commit time. The result depends only on the commit and the toolchain (Debian 12,
# scripts/install-deps.sh), not on where or when it is built. The last line of
# output is "<sha256>  byok-relay <commit>": compare it with `sha256sum` of the
# binary you run, whose `byok-relay --version` names its commit.
set -euo pipefail
shopt -s inherit_errexit   # a failing step inside $(build N) fails the script
cd "$(dirname "$0")/.."

rev=HEAD
out=
twice=
while [ $# -gt 0 ]; do
  case $1 in
    --worktree) rev=--worktree ;;
    --twice) twice=1 ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "repro-build: unknown option $1" >&2; exit 2 ;;
    *) rev=$1 ;;
  esac
  shift
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/byok-repro.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# One snapshot of the source, so both builds of --twice see the same bytes
# even if the working tree or HEAD changes meanwhile.
if [ "$rev" = --worktree ]; then
  commit=$(git rev-parse HEAD)
  epoch=$(git log -1 --format=%ct "$commit")
  if [ -n "$(git status --porcelain)" ]; then commit="$commit-dirty"; fi
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
    tar --null -T - -cf "$tmp/source.tar"
else
  commit=$(git rev-parse --verify "$rev^{commit}")
  epoch=$(git log -1 --format=%ct "$commit")
  git archive --format=tar -o "$tmp/source.tar" "$commit"
fi
export SOURCE_DATE_EPOCH=$epoch

# build N: unpacks the snapshot into its own directory, builds, checks --version,
# prints "<sha256>  byok-relay <commit>".
build() {
  local dir bin version
  dir=$(mktemp -d "$tmp/build$1.XXXXXX")
  mkdir "$dir/src"
  tar -xf "$tmp/source.tar" -C "$dir/src"
  echo "repro-build: $commit (SOURCE_DATE_EPOCH=$epoch) in $dir" >&2
  cmake -S "$dir/src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBYOK_TESTS=OFF \
    -DBYOK_GIT_COMMIT="$commit" >"$dir/configure.log" 2>&1 || { cat "$dir/configure.log" >&2; return 1; }
  cmake --build "$dir/build" --target byok-relay -j "${REPRO_JOBS:-2}" >&2
  bin="$dir/build/byok-relay"
  version=$("$bin" --version)
  case $version in
    *"commit $commit") ;;
    *) echo "repro-build: --version says '$version', expected commit $commit" >&2; return 1 ;;
  esac
  echo "repro-build: $version; $(readelf -n "$bin" | sed -n 's/^ *Build ID: */build-id /p')" >&2
  cp "$bin" "$tmp/byok-relay.$1"
  echo "$(sha256sum "$bin" | cut -d' ' -f1)  byok-relay $commit"
}

first=$(build 1)
if [ -n "$twice" ]; then
  sleep 1  # the second build starts at least a second later, in another directory
  second=$(build 2)
  echo "repro-build: first build   $first" >&2
  echo "repro-build: second build  $second" >&2
  if [ "$first" != "$second" ]; then
    echo "repro-build: the two builds differ; sections that differ:" >&2
    for s in $(readelf -SW "$tmp/byok-relay.1" | sed -n 's/^ *\[ *[0-9]*\] \(\.[^ ]*\) .*/\1/p'); do
      objcopy -O binary --only-section="$s" "$tmp/byok-relay.1" "$tmp/section.1" 2>/dev/null || continue
      objcopy -O binary --only-section="$s" "$tmp/byok-relay.2" "$tmp/section.2" 2>/dev/null || continue
      cmp -s "$tmp/section.1" "$tmp/section.2" || echo "  $s" >&2
    done
    exit 1
  fi
  echo "repro-build: the two builds are bit-identical" >&2
fi
if [ -n "$out" ]; then cp "$tmp/byok-relay.1" "$out"; fi
echo "$first"
