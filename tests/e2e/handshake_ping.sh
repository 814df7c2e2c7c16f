#!/usr/bin/env bash
# A stock wireguard-go client completes a handshake with sluiced and pings the gateway's virtual
# address through the tunnel without loss; sluiced also answers ARP and ping on both ports.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=handshake_ping
lab_require
lab_init
lab_up

lab_keygen gateway
lab_keygen laptop
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2
lab_write_config
lab_start_gateway

wg_if=$(lab_wg_name a)
lab_wg_client "$wg_if" "$LAB_DIR/laptop.key" 100.64.0.2 keepalive=25

# Persistent keepalive makes the client initiate at once.
lab_wait_wg_handshake "$wg_if" 30
wait_until 10 lab_field_is '.peers[name=laptop].state' up ||
  fail "status .peers[name=laptop].state: expected 'up', saw '$(lab_get '.peers[name=laptop].state' 2>&1)'"
lab_log "ok: sluicectl status shows peer laptop up"

assert_ping_clean "1000 pings to the virtual address $LAB_GW_VADDR through the tunnel" \
  "$LAB_NS_CL" "$LAB_GW_VADDR" 1000 0.005

# The underlay port: ARP and ICMP answered by sluiced itself (the kernel has no address there).
wait_until 10 ping_ok "$LAB_NS_CL" "$LAB_GW_WAN_ADDR" || fail "client cannot ping the underlay address $LAB_GW_WAN_ADDR"
assert_ping_clean "client pings the underlay address $LAB_GW_WAN_ADDR" "$LAB_NS_CL" "$LAB_GW_WAN_ADDR" 20 0.05

# The LAN port.
wait_until 10 ping_ok "$LAB_NS_LAN" "$LAB_GW_LAN_ADDR" || fail "LAN host cannot ping the LAN port address $LAB_GW_LAN_ADDR"
assert_ping_clean "LAN host pings the LAN port address $LAB_GW_LAN_ADDR" "$LAB_NS_LAN" "$LAB_GW_LAN_ADDR" 20 0.05

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
