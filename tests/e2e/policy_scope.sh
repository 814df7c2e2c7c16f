#!/usr/bin/env bash
# Two wireguard-go peers with different tags get different access (tags -> policies, subnet
# filter down to one host), a policy change applied with `sluicectl reload` cuts an open TCP
# connection within 1 s, and an invalid configuration is refused while traffic goes on.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=policy_scope
LAB_DEADLINE_S=150
lab_require
lab_init
lab_up

PRINTER=198.51.100.20
lab_add_host lan prn "$PRINTER/24"
lab_add_host wan cl2 192.0.2.11/24
NS_CL2=$LAB_P-cl2

policies() { # $1: what the users' office policy allows after the deny of SSH
  cat <<EOF
subnets:
  - {prefix: 198.51.100.0/24, name: Office}
policies:
  - name: office
    senders: [users]
    subnets: [Office]
    acl:
      - {action: deny, protocol: tcp, ports: [22]}
      - {action: allow, protocol: $1}
  - name: guests-printer
    senders: [guests]
    subnets: [Office]
    filter: [$PRINTER]
EOF
}
LAB_EXTRA_YAML=$(policies any)
lab_keygen laptop
lab_keygen guest
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2 "tags: [users]"
lab_peer guest "$(lab_pub guest)" 100.64.0.3 "tags: [guests]"
lab_write_config
lab_start_gateway

wg_a=$(lab_wg_name a)
wg_b=$(lab_wg_name b)
lab_wg_client "$wg_a" "$LAB_DIR/laptop.key" 100.64.0.2 allowed=100.64.0.0/10,198.51.100.0/24
lab_wg_client "$wg_b" "$LAB_DIR/guest.key" 100.64.0.3 ns="$NS_CL2" allowed=100.64.0.0/10,198.51.100.0/24
lab_wait_wg_handshake "$wg_a" 30
lab_wait_wg_handshake "$wg_b" 30 "$NS_CL2"

# Tags decide: the user reaches both hosts, the guest only the printer (subnet filter).
wait_until 10 ping_ok "$LAB_NS_CL" "$LAB_LAN_ADDR" || fail "user cannot reach $LAB_LAN_ADDR"
assert_ping_clean "user pings the LAN host" "$LAB_NS_CL" "$LAB_LAN_ADDR" 20 0.05
assert_ping_clean "user pings the printer" "$LAB_NS_CL" "$PRINTER" 20 0.05
wait_until 10 ping_ok "$NS_CL2" "$PRINTER" || fail "guest cannot reach the printer $PRINTER"
assert_ping_clean "guest pings the printer" "$NS_CL2" "$PRINTER" 20 0.05
denied0=$(lab_counter .drops.policy_deny)
read -r sent recv < <(lab_ping "$NS_CL2" "$LAB_LAN_ADDR" 5 0.2)
assert_eq "guest's pings to $LAB_LAN_ADDR answered (filtered out)" 0 "$recv"
assert_counter_ge .drops.policy_deny $((denied0 + 5))
explain=$(lab_ctl explain --peer guest --to "$LAB_LAN_ADDR" --proto icmp --json)
assert_eq "explain for the guest" deny "$(json_get .verdict <<<"$explain")"

# An open connection, revoked by a policy change: only ICMP stays allowed.
timeout 40 ip netns exec "$LAB_NS_LAN" nc -l -p 6000 >"$LAB_DIR/stream" &
lab_track $! nc
lab_wait_listen "$LAB_NS_LAN" 6000
timeout 40 ip netns exec "$LAB_NS_CL" bash -c \
  'for i in $(seq 1 1500); do echo "line $i"; sleep 0.01; done | nc '"$LAB_LAN_ADDR"' 6000' >/dev/null 2>&1 &
lab_track $! bash
stream_longer_than() { (($(wc -l <"$LAB_DIR/stream") > $1)); }
wait_until 10 stream_longer_than 50 || fail "the TCP stream did not start"
conns=$(lab_ctl conntrack --peer laptop --json)
assert_eq "the stream is tracked as established" ESTABLISHED \
  "$(python3 -c 'import json,sys; print(next((c["state"] for c in json.load(sys.stdin) if c["original"].endswith(":6000")), "none"))' <<<"$conns")"

LAB_EXTRA_YAML=$(policies icmp)
lab_write_config
expect_ok "sluicectl reload with the narrower policy" lab_ctl reload
at_reload=$(wc -l <"$LAB_DIR/stream")
sleep 1
after_1s=$(wc -l <"$LAB_DIR/stream")
sleep 2
after_3s=$(wc -l <"$LAB_DIR/stream")
lab_log "stream lines: $at_reload at reload, $after_1s after 1 s, $after_3s after 3 s"
assert_eq "no data reaches the LAN host more than 1 s after the revocation" "$after_1s" "$after_3s"
assert_lt "the stream was cut before it ended" "$after_3s" 1500
assert_ping_clean "ICMP still allowed after the change" "$LAB_NS_CL" "$LAB_LAN_ADDR" 10 0.05
assert_eq "policy generation after one reload" 2 "$(lab_get .config.policy_generation)"

# A broken configuration is refused with its position; the running one stays.
cp "$LAB_CONFIG" "$LAB_DIR/good.yaml"
printf '\npolicies: [\n' >>"$LAB_CONFIG"
out=$(lab_ctl reload 2>&1) && fail "a broken configuration was accepted"
grep -qE "$(basename "$LAB_CONFIG"):[0-9]+:[0-9]+: " <<<"$out" || fail "reload error without FILE:LINE:COL: $out"
lab_log "ok: broken configuration refused: $(tail -n 1 <<<"$out")"
assert_ping_clean "traffic unaffected by the refused reload" "$LAB_NS_CL" "$LAB_LAN_ADDR" 20 0.02
assert_eq "policy generation unchanged" 2 "$(lab_get .config.policy_generation)"
assert_eq "reload failures counted" 1 "$(lab_get .config.reload_failures)"

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
