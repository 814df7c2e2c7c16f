#!/usr/bin/env bash
# The operations files: config/sluiced.service passes `systemd-analyze verify` (skipped with a message
# where systemd-analyze is missing) and has what the README promises; scripts/hugepages --dry-run says
# what it would do, refuses bad arguments, and is idempotent on a scratch sysfs; shellcheck (if installed)
# finds nothing in scripts/hugepages and the test scripts. No root needed.
set -euo pipefail

root=${LAB_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
unit=$root/config/sluiced.service
hugepages=$root/scripts/hugepages

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
# expect_line TEXT PATTERN WHAT: TEXT has a line matching the extended regex PATTERN.
expect_line() {
  grep -qE -- "$2" <<<"$1" || fail "$3: no line matching '$2' in:"$'\n'"$1"
}

# --- The systemd unit ----------------------------------------------------------------------------------
# shellcheck disable=SC2016 # $MAINPID is literal text in the unit
for want in '^Type=simple$' \
  '^ExecStartPre=/usr/local/bin/sluiced --check --config /etc/sluice/gateway.yaml$' \
  '^ExecStart=/usr/local/bin/sluiced --config /etc/sluice/gateway.yaml$' \
  '^ExecReload=/bin/kill -HUP \$MAINPID$' '^Restart=on-failure$' '^LimitMEMLOCK=infinity$' \
  '^RuntimeDirectory=sluice$' '^StateDirectory=sluice$' '^CapabilityBoundingSet=.*CAP_IPC_LOCK' \
  '^CapabilityBoundingSet=.*CAP_NET_ADMIN' '^CapabilityBoundingSet=.*CAP_NET_RAW'; do
  grep -qE -- "$want" "$unit" || fail "sluiced.service: no line matching '$want'"
done
# Hardening that would break DPDK (devices, PCI BARs through sysfs, hugepage memory) stays out.
for banned in '^PrivateDevices=yes' '^ProtectKernelTunables=yes' '^MemoryMax=' '^SystemCallFilter='; do
  if grep -qE -- "$banned" "$unit"; then fail "sluiced.service: '$banned' breaks DPDK"; fi
done
if command -v systemd-analyze >/dev/null; then
  # verify also checks that the binaries exist: point them at one that does.
  mkdir -p "$work/unit"
  sed 's|/usr/local/bin/sluiced|/bin/true|g' "$unit" >"$work/unit/sluiced.service"
  out=$(cd "$work/unit" && timeout 60 systemd-analyze verify ./sluiced.service 2>&1) || fail "systemd-analyze verify failed:"$'\n'"$out"
  # Unknown keys and bad values are only warnings (exit 0): any line about our units is a failure.
  if grep -q 'sluiced' <<<"$out"; then
    fail "systemd-analyze verify complains:"$'\n'"$out"
  else
    echo "sluiced.service: systemd-analyze verify: clean"
  fi
else
  echo "sluiced.service: SKIP systemd-analyze verify: systemd-analyze is not installed"
fi

# --- scripts/hugepages --------------------------------------------------------------------------------
out=$("$hugepages" --dry-run 64)
expect_line "$out" '^would write 64 to /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages$|^2M pages: 64 reserved already$' \
  "hugepages --dry-run 64"
expect_line "$out" '^would run: mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages$|^hugetlbfs: mounted on /dev/hugepages already$' \
  "hugepages --dry-run 64"
if [[ -d /sys/kernel/mm/hugepages/hugepages-1048576kB ]]; then
  out=$("$hugepages" --dry-run --size 1G --persist 2)
  expect_line "$out" 'hugepages-1048576kB/nr_hugepages|1G pages: 2 reserved already' "hugepages --dry-run --size 1G 2"
  expect_line "$out" 'default_hugepagesz=1G hugepagesz=1G hugepages=2' "hugepages --dry-run --size 1G --persist"
fi
echo "hugepages --dry-run: ok"

for args in "abc" "-- -5" "--size 3M 4" "--size" "--bogus 4" "" "4 5" "--node x 4" "--mount relative/dir 4" "9999999"; do
  rc=0
  # shellcheck disable=SC2086 # the words of $args are the arguments
  "$hugepages" --dry-run $args >/dev/null 2>"$work/err" || rc=$?
  if ((rc != 2)); then
    fail "hugepages --dry-run $args: exit $rc, expected 2 (usage error)"
  elif ! grep -q '^hugepages: ' "$work/err"; then
    fail "hugepages --dry-run $args: no message on stderr"
  fi
done
echo "hugepages: bad arguments refused"

# A scratch sysfs, /etc and /proc: the real writes happen there, then again with nothing left to do.
fake=$work/fake
mkdir -p "$fake/sys/kernel/mm/hugepages/hugepages-2048kB" "$fake/sys/kernel/mm/hugepages/hugepages-1048576kB" "$fake/etc"
echo 0 >"$fake/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
echo 0 >"$fake/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"
printf 'MemTotal:        8388608 kB\nHugepagesize:       2048 kB\n' >"$fake/meminfo"
echo 'nodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0' >"$fake/mounts"
export SLUICE_HUGEPAGES_SYSFS=$fake/sys SLUICE_HUGEPAGES_ETC=$fake/etc SLUICE_HUGEPAGES_MEMINFO=$fake/meminfo \
  SLUICE_HUGEPAGES_MOUNTS=$fake/mounts
out=$("$hugepages" --persist 512)
expect_line "$out" "^writing 512 to $fake/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages$" "hugepages 512"
expect_line "$out" '^hugetlbfs: mounted on /dev/hugepages already$' "hugepages 512"
expect_line "$out" "^persist: wrote $fake/etc/sysctl.d/80-sluice-hugepages.conf" "hugepages --persist 512"
[[ $(cat "$fake/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages") == 512 ]] || fail "hugepages 512: nr_hugepages not written"
grep -qx 'vm.nr_hugepages = 512' "$fake/etc/sysctl.d/80-sluice-hugepages.conf" || fail "hugepages --persist: no vm.nr_hugepages = 512"
out=$("$hugepages" --persist 512)
expect_line "$out" '^2M pages: 512 reserved already$' "hugepages 512, again"
expect_line "$out" 'says so already$' "hugepages --persist 512, again"
if grep -qE '^(writing|running|persist: wrote)' <<<"$out"; then fail "hugepages 512, again: changed something:"$'\n'"$out"; fi
# The machine's memory bounds the request: 4000 x 2 MiB is more than 90% of the scratch 8 GiB.
rc=0
"$hugepages" 4000 >/dev/null 2>&1 || rc=$?
((rc == 2)) || fail "hugepages 4000 on 8 GiB: exit $rc, expected 2"
echo "hugepages: idempotent on a scratch sysfs"
unset SLUICE_HUGEPAGES_SYSFS SLUICE_HUGEPAGES_ETC SLUICE_HUGEPAGES_MEMINFO SLUICE_HUGEPAGES_MOUNTS

# --- shellcheck --------------------------------------------------------------------------------------
if command -v shellcheck >/dev/null; then
  if out=$(shellcheck -x "$hugepages" "$root/tests/ops/check_ops.sh" "$root/tests/config/check_examples.sh" 2>&1); then
    echo "shellcheck: clean"
  else
    fail "shellcheck:"$'\n'"$out"
  fi
else
  echo "SKIP shellcheck: not installed"
fi

if ((failures)); then
  echo "check_ops: $failures failure(s)" >&2
  exit 1
fi
echo "check_ops: ok"
