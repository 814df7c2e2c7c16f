#!/usr/bin/env bash
# The default route: a peer's traffic to the Internet leaves through the underlay with SNAT to
# the gateway's underlay address (the seed's "one static egress IP"), allowed by a policy on
# 0.0.0.0/0 that denies SSH. Topology: a router on the underlay segment (192.0.2.254) forwards
# to an "internet" host 203.0.113.10 that has no route back to the overlay.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=internet_egress
lab_require
lab_init
lab_up

ROUTER=192.0.2.254
NET_HOST=203.0.113.10
lab_add_host wan rt "$ROUTER/24"
NS_RT=$LAB_P-rt
NS_NET=$LAB_P-net
ip netns add "$NS_NET"
ip -n "$NS_NET" link set lo up
ip link add "$LAB_P-rt1" netns "$NS_RT" type veth peer name "$LAB_P-net0" netns "$NS_NET"
ip -n "$NS_RT" addr add 203.0.113.1/24 dev "$LAB_P-rt1"
ip -n "$NS_RT" link set "$LAB_P-rt1" up
ip -n "$NS_NET" addr add "$NET_HOST/24" dev "$LAB_P-net0"
ip -n "$NS_NET" link set "$LAB_P-net0" up
ip -n "$NS_NET" route add default via 203.0.113.1
for x in "$NS_RT $LAB_P-rt1" "$NS_NET $LAB_P-net0"; do
  read -r ns ifname <<<"$x"
  ip netns exec "$ns" ethtool -K "$ifname" tx off >/dev/null 2>&1 || true
done
ip netns exec "$NS_RT" sysctl -qw net.ipv4.ip_forward=1

LAB_WAN_GATEWAY=$ROUTER
LAB_EXTRA_YAML='subnets:
  - {prefix: 0.0.0.0/0, name: Internet}
policies:
  - name: internet
    senders: [users]
    subnets: [Internet]
    acl:
      - {action: deny, protocol: tcp, ports: [22]}
      - {action: allow, protocol: any}'
lab_keygen laptop
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2 "tags: [users]"
lab_write_config
lab_start_gateway

wg_if=$(lab_wg_name a)
lab_wg_client "$wg_if" "$LAB_DIR/laptop.key" 100.64.0.2 allowed=100.64.0.0/10,203.0.113.0/24
lab_wait_wg_handshake "$wg_if" 30

wait_until 15 ping_ok "$LAB_NS_CL" "$NET_HOST" || fail "client cannot reach the internet host $NET_HOST"
assert_ping_clean "client pings the internet host through the gateway" "$LAB_NS_CL" "$NET_HOST" 50 0.02

# The internet host sees the gateway's underlay address, nothing of the overlay.
timeout 20 ip netns exec "$NS_NET" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8443)); s.listen(1); s.settimeout(15)
c, addr = s.accept(); c.sendall(b"hello from the internet\n"); c.close()
open("'"$LAB_DIR"'/seen_from", "w").write(addr[0])' &
lab_track $! python3
lab_wait_listen "$NS_NET" 8443
got=$(timeout 10 ip netns exec "$LAB_NS_CL" nc -d -w 5 "$NET_HOST" 8443) || fail "TCP to $NET_HOST:8443 failed"
assert_eq "reply from the internet host" "hello from the internet" "$got"
wait_until 5 test -s "$LAB_DIR/seen_from" || fail "the internet host recorded no source"
assert_eq "source address the internet host sees" "$LAB_GW_WAN_ADDR" "$(cat "$LAB_DIR/seen_from")"

# "Everything but SSH".
timeout 15 ip netns exec "$NS_NET" nc -l -p 22 >/dev/null &
lab_track $! nc
lab_wait_listen "$NS_NET" 22
expect_fail "tcp/22 to the internet is denied" timeout 5 ip netns exec "$LAB_NS_CL" nc -z -w 2 "$NET_HOST" 22
explain=$(lab_ctl explain --peer laptop --to "$NET_HOST:443" --proto tcp --json)
assert_eq "explain: tcp/443 allowed" allow "$(json_get .verdict <<<"$explain")"
assert_eq "explain: egress through the underlay" wan "$(json_get .route.port <<<"$explain")"

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
