# Shared by tools/run and tools/test: install what is missing, configure, build.
# shellcheck shell=bash

# Debian packages, by what needs them (README.md lists what each command installs).
# The library alone: what a packager or a subproject build needs.
RINGLINGER_LIBRARY_PACKAGES=(g++ pkg-config meson ninja-build liburing-dev)
# The `ringlinger` program (-Dtools), and python3 for tools/function_lengths.py.
RINGLINGER_TOOLS_PACKAGES=(libcli11-dev libfmt-dev nlohmann-json3-dev python3)
# The tests (-Dtests, -Dbenchmarks) on top of the program's.
RINGLINGER_TEST_PACKAGES=(
  libgtest-dev libgmock-dev          # GoogleTest
  libbenchmark-dev                   # bench/micro
  iproute2 nftables                  # tests/netfault: ip netns, veth, tc tbf; nft blackholes
  curl wrk                           # tests/proxy: real clients through `ringlinger proxy`
  cmake                              # tests/install: a CMake project finds the installed library
  python3-prometheus-client          # tests/daemon, tests/tcp/metrics: the reference parser
  python3-requests nodejs            # tests/wrap: real clients and servers under `ringlinger wrap`
)
# nginx: the peer of tests/proxy, `bench --backend nginx` and bench/proxy.sh. Installed without
# starting its service (ensure_packages), so nothing listens on port 80 afterwards.
RINGLINGER_NGINX_PACKAGES=(nginx-light libnginx-mod-stream)
# HAProxy: the other proxy bench/proxy.sh measures ringlinger proxy against (issue 17 compares
# CPU per request with HAProxy 2.6's, mode tcp, one thread). Its service does not start either.
RINGLINGER_HAPROXY_PACKAGES=(haproxy)
# What `tools/run` adds: gnuplot for `bench --plot`, perf to count system calls and io-wq punts
# (optional: bench runs without them).
RINGLINGER_BENCH_PACKAGES=(gnuplot-nox linux-perf)
# What `tools/fuzz` needs: clang with its libFuzzer and sanitizer runtimes (libclang-rt), and for
# the fuzzing build (the library and fuzz/ only) nothing else but meson, ninja and liburing.
RINGLINGER_FUZZ_PACKAGES=(clang-14 libclang-rt-14-dev pkg-config meson ninja-build liburing-dev)
# What tools/check-packaging adds: the other compiler of the build matrix, and the Debian
# packaging tools (dpkg-buildpackage, dh with its meson support, lintian).
RINGLINGER_PACKAGING_PACKAGES=(clang-14 dpkg-dev debhelper lintian fakeroot)

# Installs the packages given that are not installed yet (apt-get, as root). No service starts:
# a policy-rc.d that refuses every start is in place during the install (unless the machine has
# its own), so installing nginx-light does not leave an nginx on port 80.
ensure_packages() {
  local missing=() package rc=0 guard=/usr/sbin/policy-rc.d added_guard=0
  for package in "$@"; do
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
  if [ ! -e "$guard" ]; then
    printf '#!/bin/sh\n# ringlinger tools/lib.sh: no service starts during this install\nexit 101\n' >"$guard"
    chmod 755 "$guard"
    added_guard=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [ "$added_guard" = 1 ] && rm -f "$guard"
  return "$rc"
}

# The options of build/, which tools/test and tools/run share: LTO, as the library was built
# when the figures in docs/PERFORMANCE.md were measured (CPU per close 0.959x of a build without
# it, docs/PACKAGING.md). meson.build leaves b_lto off: a packager's libringlinger.a then holds
# ordinary objects that any compiler links.
RINGLINGER_BUILD_OPTIONS=(-Db_lto=true)

# configure_into DIR [meson options...]: configures DIR (or reconfigures it with these options),
# with warnings as errors (here, not in meson.build's defaults: a packager's compiler may warn
# more).
configure_into() {
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" -Dwerror=true "$@" >/dev/null
  else
    meson setup "$dir" -Dwerror=true "$@" >/dev/null
  fi
}

# build_into DIR [meson options...]: configures DIR and builds everything in it.
build_into() {
  configure_into "$@"
  ninja -C "$1"
}
