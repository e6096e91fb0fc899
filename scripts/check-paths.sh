#!/usr/bin/env bash
# Fails when a test, script, CMake file or CI file of the repository refers to a
# path outside the repository, so that a clone alone keeps passing its tests
# (issue 16: the tests once read ../shared/vectors, beside the checkout).
#
#   scripts/check-paths.sh [DIR]       check DIR (default: this repository)
#   scripts/check-paths.sh --self-test check that the rules below still catch what they should
#
# Files checked: everything under tests/ (except the data in tests/vectors/ and
# the fuzz corpora), scripts/, .ci/, bench/, web/test/, web/package.json, every
# CMakeLists.txt and *.cmake, and, for the relative-path rules only, README.md
# and docs/*.md. deploy/ is not checked: its absolute paths (/etc, /usr) are
# those of the machine it deploys to. In git, the files are the tracked ones and
# new ones that are not ignored.
#
# Rules:
#   1. a relative path that starts with ".." and climbs above the repository
#      root, counted from the file's own directory (from the root for shell
#      scripts, which run from there), e.g. "../shared/vectors";
#   2. a path built on a directory variable that climbs out of it:
#      ${CMAKE_SOURCE_DIR}/.., ${CMAKE_CURRENT_SOURCE_DIR}/../.. (from tests/),
#      $BYOK_SOURCE_DIR/.., BYOK_SOURCE_DIR) + "/..", "$(dirname "$0")/../..";
#   3. absolute paths of this kind of machine or of a person: /work/, /home/,
#      /root/, /Users/, /mnt/, /media/, ~/, $HOME, os.homedir(), getenv("HOME");
#   4. a symbolic link anywhere in the repository that points outside it.
# URL paths such as "/v1/../x" in test data start with "/" and are not paths on
# disk; they are left alone. A line that must name such a path on purpose can
# carry the marker "check-paths: allow".
set -euo pipefail
set -f   # no globbing: paths are split on / below

self_test() {
  local t status=0 out
  t=$(mktemp -d "${TMPDIR:-/tmp}/byok-check-paths.XXXXXX")
  trap 'rm -rf "$t"' RETURN
  mkdir -p "$t/tests/crypto" "$t/tests/integration/lib" "$t/scripts" "$t/web/test" "$t/docs" "$t/tests/vectors"
  # Each line marked BAD must be reported, each marked OK must not.
  cat > "$t/tests/CMakeLists.txt" <<'EOF'
set(A "${CMAKE_SOURCE_DIR}/../shared/vectors")      # BAD 1
set(B "${CMAKE_CURRENT_SOURCE_DIR}/../../elsewhere") # BAD 2
set(C "${CMAKE_CURRENT_SOURCE_DIR}/../web/test")     # OK
set(D "${CMAKE_SOURCE_DIR}/tests/vectors")           # OK
EOF
  cat > "$t/tests/crypto/x_test.cpp" <<'EOF'
std::ifstream a(std::string(BYOK_SOURCE_DIR) + "/../shared/x.json"); // BAD 3
std::ifstream b("/work/shared/vectors/x.json");                     // BAD 4
const char* url = "/openai/v1/../../x";                             // OK
std::ifstream c(std::string(BYOK_SOURCE_DIR) + "/docs/protocol.md"); // OK
const char* home = getenv("HOME");                                  // BAD 5
EOF
  cat > "$t/scripts/run.sh" <<'EOF'
cd "$(dirname "$0")/.."
cp ../shared/vectors/a.json tests/                  # BAD 6
cat "$(dirname "$0")/../../outside"                 # BAD 7
cat ~/notes.txt                                     # BAD 8
ls "$(mktemp -d /tmp/x.XXXXXX)"                     # OK
EOF
  cat > "$t/tests/integration/lib/h.mjs" <<'EOF'
export const root = resolve(here, '../../..');              // OK
export const up = resolve(here, '../../../..');             // BAD 9
const dir = '/home/someone/keys';                           // BAD 10
EOF
  cat > "$t/web/test/a.test.mjs" <<'EOF'
import { x } from '../../tests/integration/lib/h.mjs';      // OK
EOF
  cat > "$t/docs/a.md" <<'EOF'
See [the vectors](../tests/vectors/SOURCES.md).            <!-- OK -->
Files in `../shared/vectors/SOURCES.md`.                   <!-- BAD 11 -->
EOF
  echo '"/work/nothing" in data is not checked' > "$t/tests/vectors/SOURCES.md"
  ln -s ../../../../etc "$t/tests/link"                     # BAD 12 (symlink)
  out=$(check_tree "$t" 2>&1) && { echo "check-paths self-test: the bad tree passed"; status=1; }
  local n
  for n in 1 2 3 4 5 6 7 8 9 10 11; do
    if ! grep -q "BAD $n\\b" <<<"$out"; then echo "check-paths self-test: BAD $n not reported"; status=1; fi
  done
  grep -q 'tests/link' <<<"$out" || { echo "check-paths self-test: outside symlink not reported"; status=1; }
  if grep -Ew '(OK|checked)' <<<"$out"; then echo "check-paths self-test: false positive above"; status=1; fi
  if [ $status -ne 0 ]; then printf '%s\n' "$out"; return 1; fi
  echo "check-paths self-test: all 12 bad paths reported, no false positive"
}

# Depth of a directory relative to the root ("" = 0, "a/b" = 2).
depth_of() { local d=$1; [ -z "$d" ] && { echo 0; return; }; local s=${d//[!\/]/}; echo $(( ${#s} + 1 )); }

# Walks PATH from level $2; prints "escapes" if it climbs above level 0.
escapes() {
  local path=$1 level=$2 seg
  local IFS=/
  for seg in $path; do
    case $seg in
      ''|.) ;;
      ..) level=$((level - 1)); if [ $level -lt 0 ]; then return 0; fi ;;
      *) level=$((level + 1)) ;;
    esac
  done
  return 1
}

PATHCH="[^][:space:]\"'\`;(){}<>,|&*]"   # characters of a path in source text
# Rule 1: ".." at the start of a path: after a quote, a space, "=", "(", ",", ":" or "[".
REL="(^|[][:space:]\"'\`=(,:[])(\\.\\.(/$PATHCH*)?)(\$|[][:space:]\"'\`),;])"
# Rule 2: a directory variable, then a path; group 1 is the variable, group 5 the path.
BASED="(\\\$\\{(CMAKE_SOURCE_DIR|PROJECT_SOURCE_DIR|CMAKE_CURRENT_SOURCE_DIR|CMAKE_CURRENT_LIST_DIR)\\}"
BASED+="|\\\$\\{?BYOK_SOURCE_DIR\\}?|(BYOK_SOURCE_DIR\\)?|sourceDir)[[:space:]]*\\+[[:space:]]*[\"'\`]"
BASED+="|\\\$\\(dirname[[:space:]]+\"?\\\$(0|\\{BASH_SOURCE\\[0\\]\\})\"?\\))(/$PATHCH*)"
# Rule 3: absolute paths of a machine or a person, and the home directory.
ABS="(^|[^[:alnum:]_.-])(/(work|home|root|Users|mnt|media)/|~/)|\\\$\\{?HOME\\b|os\\.homedir|process\\.env\\.HOME"
ABS+="|getenv\\(\"HOME\"\\)|expanduser"

check_file() {
  local root=$1 f=$2 docs_only=$3
  local dir=${f%/*}; [ "$dir" = "$f" ] && dir=
  local fdepth; fdepth=$(depth_of "$dir")
  local bare_depth=$fdepth
  case $f in
    *.sh|.ci/*) bare_depth=0 ;;
    *) if head -c 64 "$root/$f" | head -1 | grep -qE '^#!.*\b(ba|da)?sh\b'; then bare_depth=0; fi ;;
  esac
  local lineno line rest m p base_depth bad
  # Only lines that could match any rule are looked at closely.
  while IFS= read -r line; do
    lineno=${line%%:*}; line=${line#*:}
    case $line in *"check-paths: allow"*) continue ;; esac
    bad=
    if [ "$docs_only" = yes ]; then
      # Documentation describes other machines too; only this one's layout is wrong there.
      if [[ $line =~ \.\./shared|/work/ ]]; then bad="${BASH_REMATCH[0]}: a path outside the repository"; fi
    else
      # Rule 1: relative paths starting with "..".
      rest=$line
      while [ -z "$bad" ] && [[ $rest =~ $REL ]]; do
        m=${BASH_REMATCH[0]}; p=${BASH_REMATCH[2]}
        rest=${rest#*"$m"}
        if escapes "$p" "$bare_depth"; then bad="relative path $p climbs out of the repository"; fi
      done
      # Rule 2: a directory variable followed by a path that climbs out of it.
      rest=$line
      while [ -z "$bad" ] && [[ $rest =~ $BASED ]]; do
        m=${BASH_REMATCH[0]}; p=${BASH_REMATCH[5]}
        rest=${rest#*"$m"}
        case ${BASH_REMATCH[1]} in
          *CURRENT_SOURCE_DIR*|*CURRENT_LIST_DIR*|*dirname*) base_depth=$fdepth ;;
          *) base_depth=0 ;;
        esac
        if escapes "$p" "$base_depth"; then bad="${BASH_REMATCH[1]}$p climbs out of the repository"; fi
      done
      # Rule 3: absolute paths of a machine or a person.
      if [ -z "$bad" ] && [[ $line =~ $ABS ]]; then
        bad="absolute path ${BASH_REMATCH[2]:-${BASH_REMATCH[0]}} outside the repository"
      fi
    fi
    if [ -n "$bad" ]; then
      printf '%s:%d: %s\n    %s\n' "$f" "$lineno" "$bad" "$line"
      found=1
    fi
  done < <(grep -nE '\.\.|/(work|home|root|Users|mnt|media)/|~/|HOME|homedir|expanduser' "$root/$f" || true)
}

list_files() {
  local root=$1
  if git -C "$root" rev-parse --show-toplevel >/dev/null 2>&1 &&
     [ "$(cd "$root" && realpath "$(git rev-parse --show-toplevel)")" = "$(realpath "$root")" ]; then
    git -C "$root" ls-files -z --cached --others --exclude-standard
  else
    (cd "$root" && find . \( -name .git -o -name 'build*' -o -name node_modules \) -prune -o \( -type f -o -type l \) -print0 |
      sed -z 's|^\./||')
  fi
}

check_tree() {
  local root=$1 f target mode
  found=0
  while IFS= read -r -d '' f; do
    [ -e "$root/$f" ] || [ -L "$root/$f" ] || continue   # deleted in the work tree
    if [ -L "$root/$f" ]; then
      target=$(realpath -m "$root/$f")
      case $target/ in
        "$(realpath "$root")"/*) ;;
        *) printf '%s: symbolic link to %s, outside the repository\n' "$f" "$(readlink "$root/$f")"; found=1 ;;
      esac
      continue
    fi
    case $f in
      tests/vectors/*|tests/fuzz/corpus/*|tests/fuzz/regressions/*|scripts/check-paths.sh) continue ;;
      tests/*|scripts/*|.ci/*|bench/*|web/test/*|web/package.json|CMakeLists.txt|*/CMakeLists.txt|*.cmake) mode=no ;;
      README.md|docs/*.md) mode=yes ;;
      *) continue ;;
    esac
    grep -Iq . "$root/$f" 2>/dev/null || continue          # binary or empty
    check_file "$root" "$f" "$mode"
  done < <(list_files "$root")
  if [ $found -ne 0 ]; then
    echo "check-paths: the lines above refer to paths outside the repository; a clone alone could not run them"
    return 1
  fi
}

case ${1:-} in
  --self-test) self_test ;;
  *)
    root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
    check_tree "$root"
    echo "check-paths: no test, script, CMake or CI file refers to a path outside $(basename "$(realpath "$root")")"
    ;;
esac
