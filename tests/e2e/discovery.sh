#!/usr/bin/env bash
# Subnet discovery: a kernel interface in the gateway's namespace with an address shows up in
# `sluicectl subnets` as an available discovered subnet within 1 s (measured from the change to
# sluiced's subnet_available log event), becomes unavailable when its address goes or its link
# goes down, and comes back. The LAN port's network follows the link of the interface behind the
# port. Known subnets survive a restart (gateway.state_dir), can be forgotten, and `subnets
# rediscover` brings back a forgotten one that is still there. No traffic is involved.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=discovery
LAB_DEADLINE_S=150
lab_require
lab_init
lab_up

DMZ_ADDR=203.0.113.129/25 # a kernel-only interface of the gateway, not behind any DPDK port
DMZ=203.0.113.128/25
WAN_NET=192.0.2.0/24
IF_K=$LAB_P-k0   # the kernel interface (a veth pair: the kernel module for dummy may be missing)
IF_KP=$LAB_P-k1
BOUND_MS=${SLUICE_DISCOVERY_BOUND_MS:-1000}

LAB_EXTRA_YAML=$(
  cat <<EOF
subnets:
  - {prefix: 198.51.100.0/24, name: Office, preferred: true}
  - {prefix: 203.0.113.0/26, name: Branch, via: 198.51.100.254}
EOF
)
lab_write_config
lab_start_gateway

subnets_json() { lab_ctl subnets --json; }
# sub PREFIX FIELD: one field of the subnet with that prefix.
sub() {
  local out
  out=$(subnets_json) || return 1
  json_get ".subnets[prefix=$1].$2" <<<"$out"
}
sub_is() { # PREFIX FIELD VALUE (for wait_until)
  local v
  v=$(sub "$1" "$2" 2>/dev/null) || return 1
  [[ $v == "$3" ]]
}
sub_absent() { # PREFIX
  local out
  out=$(subnets_json) || return 1
  ! json_get ".subnets[prefix=$1].prefix" <<<"$out" >/dev/null 2>&1
}
expect_sub() { # DESCRIPTION PREFIX FIELD VALUE: within 10 s
  if ! wait_until 10 sub_is "$2" "$3" "$4"; then
    fail "$1: subnet $2 $3: expected '$4' within 10 s, saw '$(sub "$2" "$3" 2>&1)'"
  fi
  lab_log "ok: $1: $2 $3 = $4"
}

# Milliseconds from T0_MS to the first EVENT for SUBNET that sluiced logged at or after T0_MS.
event_after_ms() { # EVENT SUBNET T0_MS
  python3 - "$LAB_GW_LOG" "$@" <<'EOF'
import datetime, re, sys
log, event, subnet, t0 = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for line in open(log, errors="replace"):
    m = re.match(r"ts=(\S+) .*\bevent=(\S+)(?: .*)?\bsubnet=(\S+)", line)
    if not m or m.group(2) != event or m.group(3) != subnet:
        continue
    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
    ms = int(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
    if ms >= t0:
        print(ms - t0)
        sys.exit(0)
sys.exit(1)
EOF
}
# change DESCRIPTION EVENT SUBNET FIELD VALUE CMD...: runs CMD, waits (bounded) until sluicectl
# shows the subnet's FIELD = VALUE, and checks that sluiced logged EVENT within BOUND_MS of CMD.
change() {
  local desc=$1 event=$2 prefix=$3 field=$4 value=$5 t0 ms
  shift 5
  t0=$(_lab_now_ms)
  "$@"
  expect_sub "$desc" "$prefix" "$field" "$value"
  ms=$(event_after_ms "$event" "$prefix" "$t0") || fail "$desc: sluiced logged no $event for $prefix"
  lab_log "measured: $desc: $event after ${ms} ms"
  assert_lt "$desc: ms until sluiced saw it" "$ms" "$BOUND_MS"
}

# --- At start: configured subnets and the ports' networks -----------------------------------
assert_eq "kernel discovery" ok "$(json_get .kernel_discovery <<<"$(subnets_json)")"
expect_sub "the LAN port's network is a custom subnet" 198.51.100.0/24 origin custom
assert_eq "Office available (the LAN port is up)" true "$(sub 198.51.100.0/24 available)"
assert_eq "Office interface" lan "$(sub 198.51.100.0/24 interface)"
assert_eq "Office preferred" true "$(sub 198.51.100.0/24 preferred)"
assert_eq "Office routed through" lan "$(sub 198.51.100.0/24 port)"
assert_eq "Office name" Office "$(sub 198.51.100.0/24 name)"
assert_eq "Branch (behind a router) is not judged" null "$(sub 203.0.113.0/26 available)"
assert_eq "Branch status" unknown "$(sub 203.0.113.0/26 status)"
assert_eq "Branch routed via" 198.51.100.254 "$(sub 203.0.113.0/26 via)"
assert_eq "the WAN port's network is discovered" discovered "$(sub $WAN_NET origin)"
assert_eq "WAN network available" true "$(sub $WAN_NET available)"
assert_eq "WAN network source" '["port"]' "$(sub $WAN_NET sources)"
sub_absent "$DMZ" || fail "$DMZ known before any interface has it"
sub_absent 127.0.0.0/8 || fail "loopback listed as a subnet"

# --- A kernel interface comes, goes and comes back -----------------------------------------
ip -n "$LAB_NS_GW" link add "$IF_K" type veth peer name "$IF_KP"
ip -n "$LAB_NS_GW" link set "$IF_KP" up
ip -n "$LAB_NS_GW" link set "$IF_K" up
# Not usable addresses on it: never listed.
ip -n "$LAB_NS_GW" addr add 169.254.7.7/16 dev "$IF_K"
change "address added" subnet_available "$DMZ" available true \
  ip -n "$LAB_NS_GW" addr add "$DMZ_ADDR" dev "$IF_K"
assert_eq "$DMZ origin" discovered "$(sub $DMZ origin)"
assert_eq "$DMZ interface" "$IF_K" "$(sub $DMZ interface)"
assert_eq "$DMZ source" '["kernel"]' "$(sub $DMZ sources)"
# Only the kernel has it: the data path does not route there, and says so.
assert_eq "$DMZ routable" false "$(sub $DMZ routable)"
assert_eq "$DMZ port" null "$(sub $DMZ port)"
sub_absent 169.254.0.0/16 || fail "a link-local (auto-configured) subnet was listed"
first_seen=$(sub $DMZ first_seen)
[[ $first_seen =~ ^[0-9]+$ ]] || fail "first_seen is not a unix time: $first_seen"

change "address removed" subnet_unavailable "$DMZ" available false \
  ip -n "$LAB_NS_GW" addr del "$DMZ_ADDR" dev "$IF_K"
assert_eq "$DMZ remembered where it was" "$IF_K" "$(sub $DMZ interface)"
assert_eq "$DMZ status" unavailable "$(sub $DMZ status)"
change "address back" subnet_available "$DMZ" available true \
  ip -n "$LAB_NS_GW" addr add "$DMZ_ADDR" dev "$IF_K"
assert_eq "$DMZ first_seen kept" "$first_seen" "$(sub $DMZ first_seen)"
change "link down" subnet_unavailable "$DMZ" available false \
  ip -n "$LAB_NS_GW" link set "$IF_K" down
change "link up" subnet_available "$DMZ" available true \
  ip -n "$LAB_NS_GW" link set "$IF_K" up
# Carrier matters too: the far end of the veth going down takes the near end's carrier.
change "carrier lost" subnet_unavailable "$DMZ" available false \
  ip -n "$LAB_NS_GW" link set "$IF_KP" down
change "carrier back" subnet_available "$DMZ" available true \
  ip -n "$LAB_NS_GW" link set "$IF_KP" up

# --- The LAN port follows the kernel interface behind it (net_af_packet) --------------------
change "LAN port link down" subnet_unavailable 198.51.100.0/24 available false \
  ip -n "$LAB_NS_GW" link set "$LAB_IF_GW_LAN" down
change "LAN port link up" subnet_available 198.51.100.0/24 available true \
  ip -n "$LAB_NS_GW" link set "$LAB_IF_GW_LAN" up

# --- The human table -------------------------------------------------------------------------
table=$(lab_ctl subnets) || fail "sluicectl subnets failed"
printf '%s\n' "$table" >&2
grep -q '^NAME  *PREFIX  *ORIGIN  *PREFERRED  *AVAILABLE  *INTERFACE  *PORT  *LAST SEEN$' <<<"$table" ||
  fail "subnets table header"
grep -Eq "^Office +198\.51\.100\.0/24 +custom +yes +yes +lan +lan +now$" <<<"$table" || fail "Office row"
grep -Eq "^203\.0\.113\.128/25 +203\.0\.113\.128/25 +discovered +no +yes +$IF_K +- +now$" <<<"$table" ||
  fail "$DMZ row"
grep -q "not routed to peers by the data path" <<<"$table" || fail "no note on kernel-only subnets"
lab_log "ok: subnets table"

# --- Known across a restart -----------------------------------------------------------------
state=$LAB_DIR/state/known_subnets.json
[[ -s $state ]] || fail "no $state"
grep -q "$DMZ" "$state" || fail "$state does not list $DMZ"
lab_stop_gateway
ip -n "$LAB_NS_GW" link del "$IF_K" # takes its peer and address along
lab_start_gateway
expect_sub "after the restart" "$DMZ" available false
assert_eq "$DMZ still known, last seen on" "$IF_K" "$(sub $DMZ interface)"
assert_eq "$DMZ first_seen survived the restart" "$first_seen" "$(sub $DMZ first_seen)"
assert_eq "Office after the restart" true "$(sub 198.51.100.0/24 available)"
grep -q 'event=known_subnets_loaded' "$LAB_GW_LOG" || fail "sluiced did not say it loaded the known subnets"

# --- Forget and rediscover -------------------------------------------------------------------
expect_fail "a configured subnet cannot be forgotten" lab_ctl subnets forget --prefix 198.51.100.0/24
expect_fail "an unknown subnet cannot be forgotten" lab_ctl subnets forget --prefix 198.51.100.0/25
expect_fail "forget needs a prefix" lab_ctl subnets forget --prefix nonsense
expect_ok "forget the gone $DMZ" lab_ctl subnets forget --prefix "$DMZ"
sub_absent "$DMZ" || fail "$DMZ still listed after forget"
out=$(lab_ctl subnets forget --prefix "$WAN_NET" --json) || fail "forget $WAN_NET"
assert_eq "an available subnet is hidden" true "$(json_get .hidden <<<"$out")"
sub_absent "$WAN_NET" || fail "$WAN_NET still listed after forget"
# A change elsewhere refreshes discovery: the hidden subnet stays hidden.
change "the LAN port flaps" subnet_unavailable 198.51.100.0/24 available false \
  ip -n "$LAB_NS_GW" link set "$LAB_IF_GW_LAN" down
ip -n "$LAB_NS_GW" link set "$LAB_IF_GW_LAN" up
expect_sub "LAN port back" 198.51.100.0/24 available true
sub_absent "$WAN_NET" || fail "$WAN_NET came back without rediscover"
out=$(lab_ctl subnets rediscover --json) || fail "subnets rediscover"
assert_eq "rediscover unhid" 1 "$(json_get .unhidden <<<"$out")"
assert_eq "$WAN_NET re-populated" true "$(json_get ".subnets[prefix=$WAN_NET].available" <<<"$out")"
sub_absent "$DMZ" || fail "rediscover brought back $DMZ, which no interface has"
expect_ok "rediscover prints a table" bash -c "timeout 10 '$SLUICECTL' --socket '$LAB_SOCKET' subnets rediscover | grep -q '^NAME'"
# A reload that renames and adds configured subnets shows at once; the discovered one that a new
# custom subnet matches becomes custom (named, preferred) and keeps its status.
LAB_EXTRA_YAML=$(
  cat <<EOF
subnets:
  - {prefix: 198.51.100.0/24, name: Office, preferred: true}
  - {prefix: 203.0.113.0/26, name: Branch Office, via: 198.51.100.254}
  - {prefix: $WAN_NET, name: Underlay, preferred: true}
EOF
)
LAB_METRICS_PORT=${LAB_METRICS#*:} lab_write_config
expect_ok "reload" lab_ctl reload
assert_eq "Branch renamed" "Branch Office" "$(sub 203.0.113.0/26 name)"
assert_eq "$WAN_NET now custom" custom "$(sub $WAN_NET origin)"
assert_eq "$WAN_NET name" Underlay "$(sub $WAN_NET name)"
assert_eq "$WAN_NET preferred" true "$(sub $WAN_NET preferred)"
assert_eq "$WAN_NET still available" true "$(sub $WAN_NET available)"
expect_fail "a discovered subnet that became custom cannot be forgotten" lab_ctl subnets forget --prefix "$WAN_NET"

# And once more after a restart: the hidden list is persisted too (nothing hidden now).
lab_stop_gateway
lab_start_gateway
expect_sub "after the second restart" "$WAN_NET" available true

if grep -E 'event=(known_subnets_not_saved|known_subnets_unreadable|kernel_discovery_failed|kernel_discovery_degraded|state_dir_unusable)' "$LAB_GW_LOG" >&2; then
  fail "sluiced reported a discovery problem"
fi
lab_log "subnet events logged: $(grep -cE 'event=subnet_(un)?available' "$LAB_GW_LOG")"
lab_gateway_alive || fail "sluiced died"
lab_log "PASS"
