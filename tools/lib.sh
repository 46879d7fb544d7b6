# Shared by tools/bench and tools/test: install what is missing, configure, build.
# shellcheck shell=bash

# Debian packages the build and the tests need.
RINGLINGER_PACKAGES=(
  g++ pkg-config meson ninja-build
  liburing-dev                       # the library's one dependency
  libgtest-dev libgmock-dev          # tests
  libbenchmark-dev                   # bench/
  libcli11-dev libfmt-dev nlohmann-json3-dev   # the command line program
  nginx-light                        # the peer `bench --backend nginx` compares against
  iproute2 nftables                  # tests/netfault: ip netns, veth, tc tbf; nft blackholes
  curl wrk                           # tests/proxy: real clients through `ringlinger proxy`
  libnginx-mod-stream                # bench/proxy.sh: nginx's own TCP proxy to compare with
)

# What `tools/bench` needs on top: gnuplot for `bench --plot`, perf to count system calls and
# io-wq punts (optional: bench runs without it).
RINGLINGER_RUN_PACKAGES=(gnuplot-nox linux-perf)

# What `tools/fuzz` needs: clang with its libFuzzer and sanitizer runtimes (libclang-rt), and for
# the fuzzing build (the library and fuzz/ only) nothing else but meson, ninja and liburing.
RINGLINGER_FUZZ_PACKAGES=(clang-14 libclang-rt-14-dev pkg-config meson ninja-build liburing-dev)

# Installs the packages given (default: RINGLINGER_PACKAGES) that are not installed yet
# (apt-get, as root).
ensure_packages() {
  local wanted=("$@")
  [ ${#wanted[@]} -eq 0 ] && wanted=("${RINGLINGER_PACKAGES[@]}")
  local missing=()
  local package
  for package in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$package")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "ringlinger: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "ringlinger: not root; install them with: sudo apt-get install ${missing[*]}" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || return 1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || return 1
}

# build_into DIR [meson options...]: configures DIR (once) and builds everything in it.
build_into() {
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  ninja -C "$dir"
}
