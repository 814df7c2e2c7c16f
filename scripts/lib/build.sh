# shellcheck shell=bash
# Build helpers shared by scripts/setup and scripts/test: one place that knows how a meson build
# directory is created and kept in step with the options a caller asks for.

SLUICE_ROOT=${SLUICE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

# Debian packages the build, the tests and the demo need (prometheus: promtool, for tests/e2e/metrics.sh).
SLUICE_PACKAGES=(
  meson ninja-build pkg-config g++
  dpdk-dev libdpdk-dev libsodium-dev libb2-dev libyaml-cpp-dev prometheus-cpp-dev libcivetweb-dev libc-ares-dev
  libgtest-dev libgmock-dev libbenchmark-dev libssl-dev nlohmann-json3-dev libnuma-dev libpcap-dev
  libbsd-dev libmnl-dev
  wireguard-go wireguard-tools iproute2 ethtool iputils-ping netcat-openbsd dnsutils dnsmasq-base
  python3 procps curl prometheus
  python3-yaml python3-jsonschema shellcheck
)

say() { printf '==> %s\n' "$*" >&2; }

# Prints the packages of SLUICE_PACKAGES that are not installed, one a line.
missing_packages() {
  local p status
  for p in "${SLUICE_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || printf '%s\n' "$p"
  done
}

ensure_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  if ((${#missing[@]} == 0)); then
    say "packages: all ${#SLUICE_PACKAGES[@]} present"
    return 0
  fi
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || { say "need root to install: ${missing[*]}"; return 1; }
    sudo=(sudo)
  fi
  say "packages: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Prints "name=value" for each build option of DIR, from meson's introspection.
_builddir_options() {
  meson introspect "$1" --buildoptions | python3 -c '
import json, sys
for o in json.load(sys.stdin):
    v = o["value"]
    if isinstance(v, bool):
        v = "true" if v else "false"
    elif isinstance(v, list):
        v = ",".join(map(str, v))
    print(o["name"] + "=" + str(v))'
}

# ensure_builddir DIR [-Dname=value ...]: configures DIR with these options, creating it if needed and
# touching it only when an option differs. Compiling later regenerates on meson.build changes by itself.
ensure_builddir() {
  local dir=$1
  shift
  local opts=("$@")
  if [[ ! -f $dir/meson-private/coredata.dat ]]; then
    local log
    log=$(mktemp)
    say "meson setup $dir ${opts[*]}"
    # Also right for a half-made directory left by an interrupted setup (no coredata yet).
    if ! meson setup "$dir" "${opts[@]}" >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log"
      return 1
    fi
    rm -f "$log"
    return 0
  fi
  local current changed=() o
  current=$(_builddir_options "$dir" 2>/dev/null) || current=""
  if [[ -z $current ]]; then
    say "meson setup --reconfigure $dir ${opts[*]}"
    meson setup --reconfigure "$dir" "${opts[@]}" >/dev/null
    return
  fi
  for o in "${opts[@]}"; do
    grep -qxF -- "${o#-D}" <<<"$current" || changed+=("$o")
  done
  if ((${#changed[@]})); then
    say "meson configure $dir ${changed[*]}"
    meson configure "$dir" "${changed[@]}" >/dev/null
  else
    say "build directory $dir: configured"
  fi
}

compile_builddir() {
  say "meson compile -C $1"
  meson compile -C "$1"
}
