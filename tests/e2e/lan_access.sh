#!/usr/bin/env bash
# A wireguard-go client reaches an agentless LAN host through sluiced as the policy says, and
# not one packet more: ping, 50 MB TCP each way with matching sha256, a UDP round trip, the LAN
# host sees the gateway's LAN address (SNAT), "allow all but SSH" denies tcp/22 only, the LAN host
# cannot open anything towards the client, and a spoofed inner source is dropped and counted.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=lan_access
LAB_DEADLINE_S=170
lab_require
lab_init
lab_up

LAB_EXTRA_YAML='subnets:
  - {prefix: 198.51.100.0/24, name: Office}
policies:
  - name: office
    senders: [users]
    subnets: [Office]
    acl:
      - {action: deny, protocol: tcp, ports: [22]}
      - {action: allow, protocol: any}'
lab_keygen laptop
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2 "tags: [users]"
lab_write_config
lab_start_gateway

wg_if=$(lab_wg_name a)
lab_wg_client "$wg_if" "$LAB_DIR/laptop.key" 100.64.0.2 allowed=100.64.0.0/10,198.51.100.0/24
lab_wait_wg_handshake "$wg_if" 30
LAN=$LAB_LAN_ADDR

# ICMP through the tunnel, SNAT and ARP on the LAN side.
wait_until 10 ping_ok "$LAB_NS_CL" "$LAN" || fail "client cannot ping the LAN host $LAN"
assert_ping_clean "client pings the LAN host $LAN" "$LAB_NS_CL" "$LAN" 200 0.01

# 50 MB each way over TCP, checked end to end.
head -c $((50 * 1024 * 1024)) /dev/urandom >"$LAB_DIR/blob"
want=$(sha256sum <"$LAB_DIR/blob" | cut -d' ' -f1)
timeout 60 ip netns exec "$LAB_NS_LAN" nc -l -p 5001 >"$LAB_DIR/up.bin" &
lab_track $! nc
lab_wait_listen "$LAB_NS_LAN" 5001
timeout 60 ip netns exec "$LAB_NS_CL" nc -N "$LAN" 5001 <"$LAB_DIR/blob" || fail "upload to $LAN:5001 failed"
file_has_size() { (($(stat -c %s "$1") == $2)); }
wait_until 10 file_has_size "$LAB_DIR/up.bin" $((50 * 1024 * 1024)) || true
assert_eq "sha256 of 50 MB uploaded to the LAN host" "$want" "$(sha256sum <"$LAB_DIR/up.bin" | cut -d' ' -f1)"

timeout 60 ip netns exec "$LAB_NS_LAN" nc -N -l -p 5002 <"$LAB_DIR/blob" &
lab_track $! nc
lab_wait_listen "$LAB_NS_LAN" 5002
timeout 60 ip netns exec "$LAB_NS_CL" nc -d "$LAN" 5002 >"$LAB_DIR/down.bin" || fail "download from $LAN:5002 failed"
assert_eq "sha256 of 50 MB downloaded from the LAN host" "$want" "$(sha256sum <"$LAB_DIR/down.bin" | cut -d' ' -f1)"
rm -f "$LAB_DIR/blob" "$LAB_DIR/up.bin" "$LAB_DIR/down.bin"

# UDP round trip, and the source address the LAN host sees.
timeout 20 ip netns exec "$LAB_NS_LAN" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5003)); s.settimeout(15)
data, addr = s.recvfrom(2048)
s.sendto(data[::-1], addr)
open("'"$LAB_DIR"'/udp_from", "w").write(addr[0])' &
lab_track $! python3
lab_wait_listen "$LAB_NS_LAN" 5003 udp
reply=$(timeout 10 ip netns exec "$LAB_NS_CL" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(b"sluice-udp-probe", ("'"$LAN"'", 5003))
print(s.recvfrom(2048)[0].decode())') || fail "no UDP reply from $LAN:5003"
assert_eq "UDP reply through the tunnel" "eborp-pdu-eciuls" "$reply"
wait_until 5 test -s "$LAB_DIR/udp_from" || fail "the UDP server recorded no source"
assert_eq "source address the LAN host sees (SNAT to the LAN port)" "$LAB_GW_LAN_ADDR" "$(cat "$LAB_DIR/udp_from")"

# Allow all but SSH: tcp/22 refused by policy, another port open.
for port in 22 2222; do
  timeout 15 ip netns exec "$LAB_NS_LAN" nc -l -p "$port" >/dev/null &
  lab_track $! nc
  lab_wait_listen "$LAB_NS_LAN" "$port"
done
denied0=$(lab_counter .drops.policy_deny)
expect_fail "tcp/22 to the LAN host is denied" timeout 5 ip netns exec "$LAB_NS_CL" nc -z -w 2 "$LAN" 22
expect_ok "tcp/2222 to the LAN host is allowed" timeout 5 ip netns exec "$LAB_NS_CL" nc -z -w 2 "$LAN" 2222
assert_counter_ge .drops.policy_deny $((denied0 + 1))
explain=$(lab_ctl explain --peer laptop --to "$LAN:22" --proto tcp --json)
assert_eq "explain verdict for tcp/22" deny "$(json_get .verdict <<<"$explain")"
assert_eq "explain names the policy" office "$(json_get .policy <<<"$explain")"

# The LAN host cannot open anything towards the client or through the gateway.
timeout 15 ip netns exec "$LAB_NS_CL" nc -l -p 7000 >/dev/null &
lab_track $! nc
ip -n "$LAB_NS_LAN" route add 100.64.0.0/10 via "$LAB_GW_LAN_ADDR"
ip -n "$LAB_NS_LAN" route add 192.0.2.0/24 via "$LAB_GW_LAN_ADDR"
not_us0=$(lab_counter .drops.ip_not_for_us)
expect_fail "LAN host opens tcp to the client's virtual address" timeout 5 ip netns exec "$LAB_NS_LAN" nc -z -w 2 100.64.0.2 7000
expect_fail "LAN host pings the client's virtual address" ip netns exec "$LAB_NS_LAN" ping -n -q -c 2 -W 1 100.64.0.2
expect_fail "LAN host opens tcp to the client's underlay address" timeout 5 ip netns exec "$LAB_NS_LAN" nc -z -w 2 "$LAB_CL_ADDR" 7000
assert_counter_ge .drops.ip_not_for_us $((not_us0 + 3))
no_conn0=$(lab_counter .drops.ct_no_conn)
expect_fail "LAN host opens tcp to a SNAT port of the gateway" timeout 5 ip netns exec "$LAB_NS_LAN" nc -z -w 2 "$LAB_GW_LAN_ADDR" 40000
assert_counter_ge .drops.ct_no_conn $((no_conn0 + 1))

# A spoofed inner source: the client's kernel hands wireguard-go a packet from 100.64.0.9.
spoof0=$(lab_counter .drops.wg_inner_source)
ip netns exec "$LAB_NS_CL" python3 -c '
import socket, struct
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
icmp = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"spoof" * 4
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
src, dst = socket.inet_aton("100.64.0.9"), socket.inet_aton("'"$LAN"'")
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, src, dst)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(5): s.sendto(ip + icmp, ("'"$LAN"'", 0))'
assert_counter_ge .drops.wg_inner_source $((spoof0 + 5))
assert_ping_clean "the session still works after the spoofed packets" "$LAB_NS_CL" "$LAN" 20 0.05

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
