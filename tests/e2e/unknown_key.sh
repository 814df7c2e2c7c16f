#!/usr/bin/env bash
# A client whose key is not configured gets no handshake (counted as unknown_peer); the same client
# switched to the configured key gets through.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=unknown_key
lab_require
lab_init
lab_up

lab_keygen gateway
lab_keygen laptop
lab_keygen stranger
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2
lab_write_config
lab_start_gateway

unknown0=$(lab_counter .handshakes.unknown_peer)
wg_if=$(lab_wg_name a)
lab_wg_client "$wg_if" "$LAB_DIR/stranger.key" 100.64.0.2 keepalive=25

assert_counter_ge .handshakes.unknown_peer $((unknown0 + 1)) 15
expect_fail "unknown key: ping through the tunnel" \
  ip netns exec "$LAB_NS_CL" ping -n -q -c 3 -i 0.3 -W 1 "$LAB_GW_VADDR"
assert_eq "unknown key: client's latest handshake" 0 "$(lab_wg_handshake "$wg_if")"
state=$(lab_get '.peers[name=laptop].state')
[[ $state != up ]] || fail "peer laptop is 'up' although only an unknown key was offered"
lab_log "ok: peer laptop is '$state'"

lab_log "switching the client to the configured key"
ip netns exec "$LAB_NS_CL" wg set "$wg_if" private-key "$LAB_DIR/laptop.key"
# wireguard-go retries a handshake every 5 s; the ping also asks for one.
wait_until 40 ping_ok "$LAB_NS_CL" "$LAB_GW_VADDR" || fail "configured key: no ping reply within 40 s"
lab_wait_wg_handshake "$wg_if" 5
wait_until 10 lab_field_is '.peers[name=laptop].state' up ||
  fail "status .peers[name=laptop].state: expected 'up', saw '$(lab_get '.peers[name=laptop].state' 2>&1)'"
assert_ping_clean "configured key: pings to $LAB_GW_VADDR" "$LAB_NS_CL" "$LAB_GW_VADDR" 200 0.01

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
