#!/usr/bin/env bash
# Checks that an installed copy is usable as a library: every public header (and the generated
# version.h), libringlinger.so*, libringlinger.a, ringlinger.pc and the CMake package are there;
# consumer.cpp builds with `pkg-config --cflags --libs ringlinger` against the shared library and
# with `pkg-config --static --libs ringlinger` against the static one, and with CMake
# (cmake/CMakeLists.txt: find_package(ringlinger), ringlinger::ringlinger and
# ringlinger::ringlinger_static); every program runs and reports a clean graceful close.
#
# Usage:
#   install_test.sh BUILD_DIR PREFIX LIBDIR INCLUDEDIR HEADER_SOURCE_DIR CONSUMER_CPP [CXXFLAGS...]
#       installs BUILD_DIR into a temporary directory (meson install --destdir) first
#       (tests/install/meson.build passes these)
#   install_test.sh --staged ROOT PREFIX LIBDIR INCLUDEDIR HEADER_SOURCE_DIR CONSUMER_CPP [CXXFLAGS...]
#       checks what is already under ROOT (tools/check-packaging: the Debian packages unpacked)
# LIBDIR and INCLUDEDIR are absolute (under PREFIX); CXXFLAGS are extra compiler flags for the
# consumer (the build's sanitizers, which the installed library needs too).
set -euo pipefail

usage() {
  echo "usage: $0 {BUILD_DIR | --staged ROOT} PREFIX LIBDIR INCLUDEDIR HEADER_SOURCE_DIR CONSUMER_CPP [CXXFLAGS...]" >&2
  exit 2
}
staged= build_dir=
if [ "${1:-}" = --staged ]; then
  [ $# -ge 2 ] || usage
  staged=$2
  shift 2
else
  [ $# -ge 1 ] || usage
  build_dir=$1
  shift
fi
[ $# -ge 5 ] || usage
prefix=$1 libdir=$2 includedir=$3 header_source_dir=$4 consumer_cpp=$5
shift 5
extra_cxxflags=("$@")
here=$(cd "$(dirname "$0")" && pwd)

fail() {
  echo "install test FAILED: $*" >&2
  exit 1
}

command -v pkg-config >/dev/null || fail "pkg-config is not installed (tools/lib.sh installs it)"
command -v cmake >/dev/null || fail "cmake is not installed (tools/lib.sh installs it)"
command -v c++ >/dev/null || fail "no c++ compiler"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ringlinger-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# 1. Install into the staging directory (unless it is given).
if [ -n "$staged" ]; then
  stage=$staged
else
  stage=$tmp/stage
  if ! meson install -C "$build_dir" --destdir "$stage" --no-rebuild --quiet >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log" >&2
    fail "meson install -C $build_dir --destdir $stage failed"
  fi
  echo "installed into $stage (prefix $prefix)"
fi

# 2. Everything a library user needs is there.
staged_libdir=$stage$libdir
staged_includedir=$stage$includedir/ringlinger
pc_dir=$staged_libdir/pkgconfig
missing=()
header_count=0
for header in "$header_source_dir"/*.h "$header_source_dir"/*.hpp; do
  [ -e "$header" ] || continue
  header_count=$((header_count + 1))
  [ -f "$staged_includedir/$(basename "$header")" ] || missing+=("$includedir/ringlinger/$(basename "$header")")
done
[ "$header_count" -gt 0 ] || fail "no headers found in $header_source_dir"
[ -f "$staged_includedir/ringlinger.hpp" ] || missing+=("$includedir/ringlinger/ringlinger.hpp")
[ -e "$staged_libdir/libringlinger.so" ] || missing+=("$libdir/libringlinger.so")
compgen -G "$staged_libdir/libringlinger.so.*" >/dev/null || missing+=("$libdir/libringlinger.so.<version>")
[ -f "$staged_libdir/libringlinger.a" ] || missing+=("$libdir/libringlinger.a")
[ -f "$pc_dir/ringlinger.pc" ] || missing+=("$libdir/pkgconfig/ringlinger.pc")
[ -f "$staged_includedir/version.h" ] || missing+=("$includedir/ringlinger/version.h")
for cmake_file in ringlingerConfig.cmake ringlingerConfigVersion.cmake; do
  [ -f "$staged_libdir/cmake/ringlinger/$cmake_file" ] || missing+=("$libdir/cmake/ringlinger/$cmake_file")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installed files:" >&2
  (cd "$stage" && find . -type f -o -type l | sort) >&2
  fail "not installed: ${missing[*]}"
fi
echo "installed: $header_count headers and version.h, libringlinger.so*, libringlinger.a, ringlinger.pc, the CMake package"

# 3. pkg-config finds the staged ringlinger.pc (not some other installed copy) and prefixes its
# paths with the staging directory.
export PKG_CONFIG_PATH=$pc_dir
export PKG_CONFIG_SYSROOT_DIR=$stage
pcfiledir=$(pkg-config --variable=pcfiledir ringlinger) || fail "pkg-config does not find ringlinger in $pc_dir"
[ "$pcfiledir" = "$pc_dir" ] || fail "pkg-config found ringlinger.pc in $pcfiledir, not in $pc_dir"
read -r -a cflags <<<"$(pkg-config --cflags ringlinger)"
read -r -a libs <<<"$(pkg-config --libs ringlinger)"
read -r -a static_libs <<<"$(pkg-config --static --libs ringlinger)"
echo "pkg-config --cflags: ${cflags[*]}"
echo "pkg-config --libs: ${libs[*]}"
echo "pkg-config --static --libs: ${static_libs[*]}"
[[ " ${cflags[*]} " == *" -I$stage$includedir "* ]] || fail "pkg-config --cflags lacks -I$stage$includedir"
[[ " ${libs[*]} " == *" -L$staged_libdir "* ]] || fail "pkg-config --libs lacks -L$staged_libdir"
[[ " ${libs[*]} " == *" -lringlinger "* ]] || fail "pkg-config --libs lacks -lringlinger"
[[ " ${static_libs[*]} " == *" -luring "* ]] || fail "pkg-config --static --libs lacks -luring (liburing)"

# The consumer's output is checked, so that a program that prints nothing (or fails quietly)
# cannot pass.
check_run() {
  local name=$1
  shift
  local output
  if ! output=$("$@" 2>&1); then
    echo "$output" >&2
    fail "the $name consumer failed"
  fi
  echo "$name: $output"
  grep -Eq '^consumer ok: [0-9]+ bytes, outcome clean' <<<"$output" \
    || fail "the $name consumer did not print 'consumer ok: N bytes, outcome clean'"
}

cxx=(c++ -std=c++20 -Wall -Wextra -Werror "${extra_cxxflags[@]}")

# 4. Against the shared library.
"${cxx[@]}" "${cflags[@]}" "$consumer_cpp" "${libs[@]}" -o "$tmp/consumer_shared" \
  || fail "building the consumer against the installed shared library failed"
readelf -d "$tmp/consumer_shared" | grep -q 'NEEDED.*libringlinger\.so' \
  || fail "consumer_shared does not need libringlinger.so"
resolved=$(LD_LIBRARY_PATH=$staged_libdir ldd "$tmp/consumer_shared" | grep libringlinger) || true
[[ "$resolved" == *"$staged_libdir/"* ]] || fail "consumer_shared loads '$resolved', not the staged library"
check_run shared env LD_LIBRARY_PATH="$staged_libdir" "$tmp/consumer_shared"

# 5. Against the static library: the same flags, with -lringlinger taken from libringlinger.a.
static_link=()
for flag in "${static_libs[@]}"; do
  if [ "$flag" = "-lringlinger" ]; then
    static_link+=(-Wl,-Bstatic -lringlinger -Wl,-Bdynamic)
  else
    static_link+=("$flag")
  fi
done
"${cxx[@]}" "${cflags[@]}" "$consumer_cpp" "${static_link[@]}" -o "$tmp/consumer_static" \
  || fail "building the consumer against the installed static library failed"
if readelf -d "$tmp/consumer_static" | grep -q 'NEEDED.*libringlinger'; then
  fail "consumer_static still needs libringlinger.so"
fi
check_run static "$tmp/consumer_static"

# 6. With CMake: find_package(ringlinger) from the staged prefix, both targets.
cmake_log=$tmp/cmake.log
if ! cmake -S "$here/cmake" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$stage$prefix" \
    -DCONSUMER_CPP="$consumer_cpp" -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror ${extra_cxxflags[*]}" \
    >"$cmake_log" 2>&1 || ! cmake --build "$tmp/cmake-build" >>"$cmake_log" 2>&1; then
  cat "$cmake_log" >&2
  fail "the CMake consumer (tests/install/cmake) did not configure or build"
fi
found=$(grep -m1 'ringlinger .* from ' "$cmake_log") || fail "find_package(ringlinger) said nothing"
echo "cmake: ${found#-- }"
[[ "$found" == *" from $stage"* ]] || fail "CMake found ringlinger outside $stage: $found"
readelf -d "$tmp/cmake-build/consumer_shared" | grep -q 'NEEDED.*libringlinger\.so' \
  || fail "the CMake consumer_shared does not need libringlinger.so"
if readelf -d "$tmp/cmake-build/consumer_static" | grep -q 'NEEDED.*libringlinger'; then
  fail "the CMake consumer_static still needs libringlinger.so"
fi
check_run cmake-shared env LD_LIBRARY_PATH="$staged_libdir" "$tmp/cmake-build/consumer_shared"
check_run cmake-static "$tmp/cmake-build/consumer_static"

echo "install test passed"
