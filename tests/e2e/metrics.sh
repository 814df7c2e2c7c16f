#!/usr/bin/env bash
# Prometheus metrics: sluiced serves /metrics at metrics.listen inside its namespace; the text
# passes `promtool check metrics`, every name is sluice_*, and the values follow known traffic:
# N pings and allowed UDP flows through the tunnel (peer, port and rule-hit counters), datagrams
# a rule denies (drops by reason and that rule's hits, exactly), handshakes, connection tables,
# and the reload counters after a good and a refused `sluicectl reload`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=metrics
LAB_DEADLINE_S=150
lab_require
command -v promtool >/dev/null || fail "promtool not found (Debian package prometheus; scripts/setup installs it)"
command -v curl >/dev/null || fail "curl not found"
lab_init
lab_up

PINGS=20
DENIED=7        # UDP datagrams to the denied port
DENY_PORT=9999
FLOWS=3         # allowed UDP flows, 2 datagrams each
ALLOW_PORT=7000

policies() { # $1: extra rule appended to the office policy's acl (a reload changes it)
  cat <<EOF
subnets:
  - {prefix: 198.51.100.0/24, name: Office}
policies:
  - name: office
    senders: [users]
    subnets: [Office]
    acl:
      - {action: deny, protocol: udp, ports: [$DENY_PORT]}
      - {action: allow, protocol: any}
$1
EOF
}
LAB_EXTRA_YAML=$(policies "")
lab_keygen laptop
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2 "tags: [users]"
lab_write_config
lab_start_gateway

M=$LAB_DIR/metrics.txt
scrape() { # writes $M; fails when the endpoint does not answer 200
  ip netns exec "$LAB_NS_GW" curl -sSf --max-time 10 "http://$LAB_METRICS/metrics" -o "$M"
}
# mval NAME [label=value ...]: the value of the one sample of NAME with those labels in $M, or
# nothing when there is none (more than one matching sample is an error).
mval() {
  python3 - "$M" "$@" <<'EOF'
import re, sys
path, name, want = sys.argv[1], sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:])
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
found = []
for line in open(path):
    m = sample.match(line.strip())
    if not m or m.group(1) != name:
        continue
    labels = dict(label.findall(m.group(2) or ""))
    if all(labels.get(k) == v for k, v in want.items()):
        found.append(m.group(3))
if len(found) > 1:
    sys.exit(f"{len(found)} samples of {name} match {want}")
if found:
    v = float(found[0])
    print(int(v) if v == int(v) else v)
EOF
}
# num NAME [labels...]: like mval, but the sample must exist.
num() {
  local v
  v=$(mval "$@") || fail "reading $*"
  [[ -n $v ]] || fail "no sample $* in /metrics"
  echo "$v"
}

expect_ok "the metrics endpoint answers" scrape
expect_ok "promtool check metrics on a fresh gateway" promtool check metrics <"$M"
others=$(grep -v '^#' "$M" | grep -v '^sluice_' || true)
[[ -z $others ]] || fail "series without the sluice_ prefix: $(head -n 3 <<<"$others")"
lab_log "ok: $(grep -c '^# TYPE' "$M") families, $(grep -vc '^#' "$M") series, all sluice_*"
assert_eq "gateway label" 1 "$(num sluice_config_generation gateway="lab-$LAB_P")"
assert_eq "reloads at start" 0 "$(num sluice_reloads_total)"
assert_eq "peers" 1 "$(num sluice_peers)"
assert_eq "laptop is down before a handshake" 0 "$(num sluice_peer_up peer=laptop)"
[[ -z $(mval sluice_peer_last_handshake_age_seconds peer=laptop) ]] || fail "a handshake age before any handshake"
loaded=$(num sluice_last_reload_success_timestamp_seconds)
assert_ge "start-up counts as the first successful load" "${loaded%.*}" $(($(date +%s) - 60))

wg_a=$(lab_wg_name a)
lab_wg_client "$wg_a" "$LAB_DIR/laptop.key" 100.64.0.2 allowed=100.64.0.0/10,198.51.100.0/24
lab_wait_wg_handshake "$wg_a" 30
wait_until 10 ping_ok "$LAB_NS_CL" "$LAB_LAN_ADDR" || fail "laptop cannot reach $LAB_LAN_ADDR"

# Baseline, then exactly known traffic.
scrape
rx0=$(num sluice_peer_rx_packets_total peer=laptop)
tx0=$(num sluice_peer_tx_packets_total peer=laptop)
deny0=$(num sluice_drops_total reason=policy_deny)
hit_deny0=$(num sluice_policy_rule_hits_total policy=office rule=0)
hit_allow0=$(num sluice_policy_rule_hits_total policy=office rule=1)
lan_tx0=$(num sluice_port_tx_packets_total port=lan)
lan_rx0=$(num sluice_port_rx_packets_total port=lan)
wan_rx0=$(num sluice_port_rx_packets_total port=wan)

assert_ping_clean "pings through the tunnel" "$LAB_NS_CL" "$LAB_LAN_ADDR" "$PINGS" 0.05
# Datagrams from one socket: a denied flow ($DENIED packets), then $FLOWS allowed flows of two
# datagrams each (each from its own source port: its own flow).
ip netns exec "$LAB_NS_CL" python3 - "$LAB_LAN_ADDR" "$DENY_PORT" "$DENIED" "$ALLOW_PORT" "$FLOWS" <<'EOF'
import socket, sys, time
dst, deny_port, denied, allow_port, flows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(denied):
    s.sendto(b"denied %d" % i, (dst, deny_port))
    time.sleep(0.02)
for f in range(flows):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("0.0.0.0", 41001 + f))  # distinct source ports: distinct flows, never a reused one
    for i in range(2):
        a.sendto(b"allowed %d" % i, (dst, allow_port))
        time.sleep(0.02)
    a.close()
EOF

denied_seen() { scrape && (($(num sluice_drops_total reason=policy_deny) >= deny0 + DENIED)); }
wait_until 10 denied_seen || fail "policy_deny drops did not reach $((deny0 + DENIED))"
scrape
expect_ok "promtool check metrics after traffic" promtool check metrics <"$M"
assert_eq "policy_deny drops: one per denied datagram" "$((deny0 + DENIED))" "$(num sluice_drops_total reason=policy_deny)"
assert_eq "hits of the deny rule: one per denied datagram" "$((hit_deny0 + DENIED))" \
  "$(num sluice_policy_rule_hits_total policy=office rule=0)"
assert_eq "hits of the allow rule: one per flow opened (the pings, $FLOWS UDP flows)" "$((hit_allow0 + 1 + FLOWS))" \
  "$(num sluice_policy_rule_hits_total policy=office rule=1)"
assert_eq "no default-deny hits" 0 "$(num sluice_policy_rule_hits_total policy=office rule=default)"
rx=$(num sluice_peer_rx_packets_total peer=laptop)
tx=$(num sluice_peer_tx_packets_total peer=laptop)
assert_ge "laptop's rx packets: pings and datagrams" "$rx" $((rx0 + PINGS + DENIED + 2 * FLOWS))
assert_ge "laptop's tx packets: echo replies" "$tx" $((tx0 + PINGS))
assert_gt "laptop's rx bytes" "$(num sluice_peer_rx_bytes_total peer=laptop)" 0
assert_ge "lan port sent the pings and the allowed datagrams" "$(num sluice_port_tx_packets_total port=lan)" \
  $((lan_tx0 + PINGS + 2 * FLOWS))
assert_ge "lan port received the echo replies" "$(num sluice_port_rx_packets_total port=lan)" $((lan_rx0 + PINGS))
assert_ge "wan port received at least the laptop's packets" "$(num sluice_port_rx_packets_total port=wan)" \
  $((wan_rx0 + rx - rx0))
assert_ge "wan port sent at least the laptop's packets" "$(num sluice_port_tx_packets_total port=wan)" "$tx"
assert_gt "wan bytes" "$(num sluice_port_rx_bytes_total port=wan)" 0
assert_eq "no port errors" 0 "$(num sluice_port_rx_errors_total port=wan)"

assert_eq "laptop is up" 1 "$(num sluice_peer_up peer=laptop)"
assert_ge "handshakes accepted" "$(num sluice_handshakes_total outcome=ok)" 1
assert_ge "sessions as responder" "$(num sluice_handshakes_completed_total role=responder)" 1
age=$(num sluice_peer_last_handshake_age_seconds peer=laptop)
num_lt "$age" 180 || fail "handshake age $age s"
assert_eq "not under load" 0 "$(num sluice_under_load)"
assert_ge "connections open (pings, allowed flows)" "$(num sluice_conntrack_entries worker=0)" 1
assert_gt "connection table size" "$(num sluice_conntrack_capacity worker=0)" 0
assert_gt "worker busy cycles" "$(num sluice_worker_busy_cycles_total worker=0)" 0
assert_gt "worker idle cycles" "$(num sluice_worker_idle_cycles_total worker=0)" 0

# A good reload, then a refused one.
before=$(date +%s)
LAB_EXTRA_YAML=$(policies "      - {action: deny, protocol: tcp, ports: [23]}")
lab_write_config
expect_ok "sluicectl reload" lab_ctl reload
# A scrape waits (bounded) for a fresh snapshot; poll anyway, the control thread may be slow.
counter_is() { scrape && [[ $(num "$1") == "$2" ]]; }
wait_until 10 counter_is sluice_reloads_total 1 || fail "sluice_reloads_total did not reach 1"
assert_eq "reloads" 1 "$(num sluice_reloads_total)"
assert_eq "config generation" 2 "$(num sluice_config_generation)"
loaded=$(num sluice_last_reload_success_timestamp_seconds)
assert_ge "last successful reload time" "${loaded%.*}" "$before"
assert_eq "rule hits carry over the reload" "$((hit_allow0 + 1 + FLOWS))" \
  "$(num sluice_policy_rule_hits_total policy=office rule=1)"
assert_eq "the new rule has a series" 0 "$(num sluice_policy_rule_hits_total policy=office rule=2)"
printf '\npolicies: [\n' >>"$LAB_CONFIG"
expect_fail "a broken configuration is refused" lab_ctl reload
wait_until 10 counter_is sluice_reload_failures_total 1 || fail "sluice_reload_failures_total did not reach 1"
assert_eq "reload failures" 1 "$(num sluice_reload_failures_total)"
assert_eq "reloads unchanged" 1 "$(num sluice_reloads_total)"
# Two more generations: the first generation's hit table is retired and folded into the totals.
for extra in "      - {action: deny, protocol: tcp, ports: [24]}" ""; do
  LAB_EXTRA_YAML=$(policies "$extra")
  lab_write_config
  expect_ok "sluicectl reload" lab_ctl reload
done
wait_until 10 counter_is sluice_reloads_total 3 || fail "sluice_reloads_total did not reach 3"
assert_eq "config generation" 4 "$(num sluice_config_generation)"
assert_eq "rule hits survive retired generations" "$((hit_allow0 + 1 + FLOWS))" \
  "$(num sluice_policy_rule_hits_total policy=office rule=1)"
assert_eq "deny hits survive retired generations" "$((hit_deny0 + DENIED))" \
  "$(num sluice_policy_rule_hits_total policy=office rule=0)"
expect_ok "promtool check metrics after reloads" promtool check metrics <"$M"

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
