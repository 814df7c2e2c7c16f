#!/usr/bin/env bash
# Cookie replies interoperate with a stock client: with the under-load threshold at zero the
# gateway demands a cookie for every handshake, so wireguard-go must consume our cookie reply
# (XChaCha20-Poly1305 under our public key) and retry with a valid MAC2 before it gets in.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=under_load
lab_require
lab_init
lab_up

LAB_GATEWAY_EXTRA='  under_load_threshold: 0'
lab_keygen laptop
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2
lab_write_config
lab_start_gateway

wg_if=$(lab_wg_name a)
lab_wg_client "$wg_if" "$LAB_DIR/laptop.key" 100.64.0.2 keepalive=25
# The first initiation is answered with a cookie; the retry (REKEY_TIMEOUT, 5 s) carries MAC2.
lab_wait_wg_handshake "$wg_if" 30
assert_counter_ge .handshakes.cookie_needed 1
assert_counter_ge .handshakes.cookie_reply_sent 1
assert_counter_ge .handshakes.initiation_ok 1
wait_until 10 lab_field_is '.peers[name=laptop].state' up || fail "peer laptop not up"
assert_ping_clean "pings through the tunnel after the cookie exchange" "$LAB_NS_CL" "$LAB_GW_VADDR" 50 0.02

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
