#!/usr/bin/env bash
# Phase 1: three rekeys forced with `sluicectl rekey` under a steady ping: each makes a new handshake
# and no echo is lost. Phase 2: a peer with a configured endpoint and a client that knows no endpoint
# for the gateway: the gateway must initiate, after which the client reaches the virtual address.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=rekey
lab_require
lab_init
lab_up

lab_keygen gateway
lab_keygen laptop
lab_keygen office
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2
lab_write_config
lab_start_gateway

wg_a=$(lab_wg_name a)
lab_wg_client "$wg_a" "$LAB_DIR/laptop.key" 100.64.0.2 keepalive=25
lab_wait_wg_handshake "$wg_a" 30
wait_until 10 lab_field_is '.peers[name=laptop].state' up || fail "peer laptop never came up"
wait_until 10 ping_ok "$LAB_NS_CL" "$LAB_GW_VADDR" || fail "no ping reply from $LAB_GW_VADDR before the rekeys"

# --- phase 1: forced rekeys under load --------------------------------------------------------
# 2000 echoes 10 ms apart: over 20 s, longer than the three rekeys 3 s apart take.
ping_count=2000
lab_ping "$LAB_NS_CL" "$LAB_GW_VADDR" "$ping_count" 0.01 >"$LAB_DIR/ping.out" &
ping_pid=$!
lab_track "$ping_pid" bash

age_path='.peers[name=laptop].latest_handshake_age_s'
# Without a new handshake the age only grows; with one it counts from the rekey.
age_reset() {
  local a
  a=$(lab_get "$age_path" 2>/dev/null) && is_number "$a" && num_lt "$a" "$age0"
}
client_new() { (($(lab_wg_handshake "$wg_a") > client_ts0)); }
for round in 1 2 3; do
  # Let the current handshake age so that a new one is visible in latest_handshake_age_s.
  sleep 3
  init0=$(lab_counter .handshakes.initiation_sent)
  resp0=$(lab_counter .handshakes.response_ok)
  age0=$(lab_get "$age_path")
  client_ts0=$(lab_wg_handshake "$wg_a")
  is_number "$age0" || fail "$age_path: expected a number, saw '$age0'"
  num_lt "$age0" 2 && fail "round $round: handshake age $age0 s before the rekey; expected >= 2 (something else rekeyed?)"

  expect_ok "round $round: sluicectl rekey --peer laptop" lab_ctl rekey --peer laptop
  assert_counter_ge .handshakes.initiation_sent $((init0 + 1)) 10
  assert_counter_ge .handshakes.response_ok $((resp0 + 1)) 10
  wait_until 10 age_reset || fail "round $round: $age_path did not reset (was $age0, now $(lab_get "$age_path" 2>&1))"
  lab_log "ok: round $round: handshake age $age0 s -> $(lab_get "$age_path") s"
  wait_until 5 client_new || fail "round $round: the client's latest handshake did not advance (still $client_ts0)"
  lab_log "ok: round $round: the client saw the new handshake"
  lab_pid_alive "$ping_pid" || fail "round $round: the ping ended before the rekeys finished (test timing)"
done

wait "$ping_pid" || true
read -r sent recv <"$LAB_DIR/ping.out"
assert_eq "echoes sent during the rekeys" "$ping_count" "$sent"
assert_eq "echo replies during the rekeys (zero loss)" "$ping_count" "$recv"

# --- phase 2: the gateway initiates to a configured endpoint ----------------------------------
lab_wg_stop "$wg_a"
lab_stop_gateway

office_port=51900
lab_peer office "$(lab_pub office)" 100.64.0.3 \
  "endpoint: $LAB_CL_ADDR:$office_port" "persistent_keepalive: 10"
lab_write_config
# The client listens on a fixed port and has no endpoint for the gateway: it cannot start a
# handshake, so any handshake it completes was initiated by the gateway. Up before the gateway.
wg_b=$(lab_wg_name b)
lab_wg_client "$wg_b" "$LAB_DIR/office.key" 100.64.0.3 endpoint=none listen_port="$office_port" keepalive=off
lab_start_gateway

lab_wait_wg_handshake "$wg_b" 30
assert_counter_ge .handshakes.initiation_sent 1 5
wait_until 10 lab_field_is '.peers[name=office].state' up ||
  fail "status .peers[name=office].state: expected 'up', saw '$(lab_get '.peers[name=office].state' 2>&1)'"
lab_log "ok: peer office up"
wait_until 10 ping_ok "$LAB_NS_CL" "$LAB_GW_VADDR" || fail "gateway-initiated session: no ping reply from $LAB_GW_VADDR"
assert_ping_clean "gateway-initiated session: pings to $LAB_GW_VADDR" "$LAB_NS_CL" "$LAB_GW_VADDR" 100 0.01

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
