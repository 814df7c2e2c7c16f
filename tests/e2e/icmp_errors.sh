#!/usr/bin/env bash
# What a real network needs, through the tunnel: ICMP errors from the LAN reach the peer with
# the quoted header translated back (SNAT undone), and the gateway answers itself where it
# should. A wireguard-go client; behind the gateway a LAN host and a router to a second segment:
#
#   client ns --tunnel-- sluiced --LAN 198.51.100.0/24-- lan host 198.51.100.10
#                                        |
#                                    router (rt) 198.51.100.254 | 203.0.113.1 -- far host 203.0.113.10
#                                    route to .10 with MTU 1280, 203.0.113.200 unreachable,
#                                    203.0.113.201 prohibited
#
# Checks: UDP to a closed port -> ECONNREFUSED on the client's socket; TTL 1 -> time exceeded
# from the gateway's virtual address, TTL 2 -> from the router; host unreachable and
# administratively prohibited from the router; DF packets over the router's MTU -> frag needed
# (mtu 1280) that the client's kernel caches, and a TCP transfer that needs it (sha256);
# a LAN reply with DF over the tunnel MTU -> the gateway's own frag needed (mtu 1420) to the
# LAN host; a 3000-byte ping and a 4000-byte UDP datagram each way (fragments both ways).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=icmp_errors
LAB_DEADLINE_S=150
lab_require
lab_init
lab_up

LAN=$LAB_LAN_ADDR
ROUTER=198.51.100.254
FAR=203.0.113.10
UNREACH=203.0.113.200
PROHIB=203.0.113.201

# The router: a LAN host that forwards to a second segment with one far host behind it.
lab_add_host lan rt "$ROUTER/24"
NS_RT=$LAB_P-rt
NS_FAR=$LAB_P-far
ip netns add "$NS_FAR"
ip -n "$NS_FAR" link set lo up
ip -n "$NS_RT" link add "$LAB_P-r1" type veth peer name "$LAB_P-f0" netns "$NS_FAR"
ip netns exec "$NS_RT" ethtool -K "$LAB_P-r1" tx off >/dev/null
ip netns exec "$NS_FAR" ethtool -K "$LAB_P-f0" tx off >/dev/null
ip -n "$NS_RT" addr add 203.0.113.1/24 dev "$LAB_P-r1"
ip -n "$NS_RT" link set "$LAB_P-r1" up
ip -n "$NS_FAR" addr add "$FAR/24" dev "$LAB_P-f0"
ip -n "$NS_FAR" link set "$LAB_P-f0" up
ip -n "$NS_FAR" route add default via 203.0.113.1
ip netns exec "$NS_RT" sysctl -qw net.ipv4.ip_forward=1
# A narrower path to the far host: forwarded packets over 1280 bytes with DF get "frag needed".
# (A route MTU rather than the link's: the far host keeps MSS 1460, so TCP needs PMTUD.)
ip -n "$NS_RT" route add "$FAR/32" dev "$LAB_P-r1" mtu lock 1280
ip -n "$NS_RT" route add unreachable "$UNREACH/32"
ip -n "$NS_RT" route add prohibit "$PROHIB/32"

# af_packet ports in a fanout group get IP fragments reassembled by the kernel: frames up to
# 8 KiB so a LAN host's fragmented 4000-byte reply arrives whole (sluiced sizes its mbufs to it).
LAB_DEVARGS=",blocksz=8192,framesz=8192"
LAB_EXTRA_YAML="subnets:
  - {prefix: 198.51.100.0/24, name: Office}
  - {prefix: 203.0.113.0/24, name: Lab, via: $ROUTER}
policies:
  - name: all
    senders: [users]
    subnets: [Office, Lab]"
lab_keygen laptop
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2 "tags: [users]"
lab_write_config
lab_start_gateway

wg_if=$(lab_wg_name a)
lab_wg_client "$wg_if" "$LAB_DIR/laptop.key" 100.64.0.2 allowed=100.64.0.0/10,198.51.100.0/24,203.0.113.0/24
lab_wait_wg_handshake "$wg_if" 30
wait_until 10 ping_ok "$LAB_NS_CL" "$LAN" || fail "client cannot ping the LAN host $LAN"
wait_until 10 ping_ok "$LAB_NS_CL" "$FAR" || fail "client cannot ping the far host $FAR behind the router"

# ping_from NS DST [ping options]: one echo (2 s), its output whatever the outcome.
ping_from() {
  local ns=$1 dst=$2
  shift 2
  timeout 10 ip netns exec "$ns" ping -n -c 1 -W 2 "$@" "$dst" 2>&1 || true
}
expect_line() { # DESCRIPTION OUTPUT REGEX
  if ! grep -Eq "$3" <<<"$2"; then
    printf '%s\n' "$2" >&2
    fail "$1: expected a line matching '$3'"
  fi
  lab_log "ok: $1: $(grep -Em1 "$3" <<<"$2")"
}
no_conn0=$(lab_counter .drops.icmp_error_no_conn)

# 1. Port unreachable from the LAN host: the client's connected UDP socket is refused.
refused=$(timeout 20 ip netns exec "$LAB_NS_CL" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("'"$LAN"'", 9)); s.settimeout(2)
for _ in range(5):
    s.send(b"anyone there?")
    try:
        s.recv(100)
    except ConnectionRefusedError:
        print("refused"); break
    except socket.timeout:
        pass
else:
    print("no error")')
assert_eq "UDP to a closed port of $LAN" refused "$refused"

# 2. Time exceeded: the gateway itself at TTL 1, the router at TTL 2, the far host at TTL 3.
out=$(ping_from "$LAB_NS_CL" "$FAR" -t 1)
expect_line "TTL 1 expires on the gateway" "$out" "^From $LAB_GW_VADDR icmp_seq=1 Time to live exceeded"
out=$(ping_from "$LAB_NS_CL" "$FAR" -t 2)
expect_line "TTL 2 expires on the router" "$out" "^From $ROUTER icmp_seq=1 Time to live exceeded"
out=$(ping_from "$LAB_NS_CL" "$FAR" -t 3)
expect_line "TTL 3 reaches the far host" "$out" "bytes from $FAR: icmp_seq=1"
assert_counter_ge .drops.ip_ttl_exceeded 1

# 3. Unreachable destinations behind the router.
out=$(ping_from "$LAB_NS_CL" "$UNREACH")
expect_line "host unreachable from the router" "$out" "^From $ROUTER icmp_seq=1 Destination Host Unreachable"
out=$(ping_from "$LAB_NS_CL" "$PROHIB")
expect_line "administratively prohibited by the router" "$out" "^From $ROUTER icmp_seq=1 Packet filtered"

# 4. Path MTU behind the router: frag needed reaches the client, whose kernel then knows it.
out=$(ping_from "$LAB_NS_CL" "$FAR" -M "do" -s 1300)
expect_line "DF ping over the router's MTU" "$out" "^From $ROUTER icmp_seq=1 Frag needed and DF set \(mtu = 1280\)"
route=$(ip -n "$LAB_NS_CL" route get "$FAR")
expect_line "the client's kernel caches the path MTU" "$route" "mtu 1280"
out=$(ping_from "$LAB_NS_CL" "$FAR" -M "do" -s 1252)
expect_line "a DF ping that fits the path" "$out" "1260 bytes from $FAR: icmp_seq=1"
# Forget it (route.flush also drops the cached path MTUs), so TCP has to find it again.
ip netns exec "$LAB_NS_CL" sysctl -qw net.ipv4.route.flush=1
route=$(ip -n "$LAB_NS_CL" route get "$FAR")
if grep -q "mtu 1280" <<<"$route"; then fail "the client's path MTU cache did not flush: $route"; fi

# TCP from the client to the far host needs that: MSS 1380 each way, 1280 on the path.
head -c $((4 * 1024 * 1024)) /dev/urandom >"$LAB_DIR/blob"
want=$(sha256sum <"$LAB_DIR/blob" | cut -d' ' -f1)
timeout 40 ip netns exec "$NS_FAR" nc -l -p 5001 >"$LAB_DIR/up.bin" &
lab_track $! nc
lab_wait_listen "$NS_FAR" 5001
timeout 40 ip netns exec "$LAB_NS_CL" nc -N "$FAR" 5001 <"$LAB_DIR/blob" || fail "upload to $FAR:5001 failed"
file_has_size() { (($(stat -c %s "$1") == $2)); }
wait_until 10 file_has_size "$LAB_DIR/up.bin" $((4 * 1024 * 1024)) || true
assert_eq "sha256 of 4 MB sent over a 1280-byte path (PMTUD through the tunnel)" "$want" \
  "$(sha256sum <"$LAB_DIR/up.bin" | cut -d' ' -f1)"
route=$(ip -n "$LAB_NS_CL" route get "$FAR")
expect_line "TCP learnt the path MTU" "$route" "mtu 1280"

# 5. The gateway's own frag needed: a LAN reply with DF larger than the tunnel MTU (1420).
timeout 30 ip netns exec "$LAB_NS_LAN" python3 -c '
import errno, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF, no fragments
s.bind(("0.0.0.0", 5004)); s.settimeout(20)
data, peer = s.recvfrom(100)
result = "no error"
for _ in range(100):  # until the gateway told us (bounded: 10 s)
    try:
        s.sendto(b"B" * 1472, peer)
    except OSError as e:
        if e.errno == errno.EMSGSIZE:
            result = "emsgsize"
            break
        raise
    time.sleep(0.1)
s.connect(peer)
mtu = s.getsockopt(socket.IPPROTO_IP, 14)  # IP_MTU
s.send(b"S" * (mtu - 28))
open("'"$LAB_DIR"'/pmtu", "w").write("%s %d" % (result, mtu))' &
lab_track $! python3
lab_wait_listen "$LAB_NS_LAN" 5004 udp
frag0=$(lab_counter .drops.frag_needed)
got=$(timeout 20 ip netns exec "$LAB_NS_CL" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(15)
s.sendto(b"hello", ("'"$LAN"'", 5004))
print(len(s.recvfrom(4096)[0]))') || fail "no reply from the DF UDP server"
wait_until 5 test -s "$LAB_DIR/pmtu" || fail "the DF UDP server did not finish"
assert_eq "the LAN host learnt the tunnel MTU from the gateway" "emsgsize 1420" "$(cat "$LAB_DIR/pmtu")"
assert_eq "the client got only the datagram that fits" 1392 "$got"
assert_counter_ge .drops.frag_needed $((frag0 + 1))

# 6. Fragments both ways: a 3000-byte ping (the client fragments at 1420; the LAN host's reply
# comes back in 1500-byte fragments the gateway re-fragments for the tunnel), and 4000 bytes
# of UDP to an echo server and back.
fr0=$(lab_counter '.workers[0].fragments_out')
assert_ping_clean "3000-byte pings to the LAN host" "$LAB_NS_CL" "$LAN" 5 0.2 -s 3000
assert_ping_clean "3000-byte pings to the far host" "$LAB_NS_CL" "$FAR" 5 0.2 -s 3000
timeout 30 ip netns exec "$LAB_NS_LAN" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5005)); s.settimeout(20)
for _ in range(3):
    data, addr = s.recvfrom(65535)
    s.sendto(data[::-1], addr)' &
lab_track $! python3
lab_wait_listen "$LAB_NS_LAN" 5005 udp
echo_ok=$(timeout 20 ip netns exec "$LAB_NS_CL" python3 -c '
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
for _ in range(3):
    data = os.urandom(4000)
    s.sendto(data, ("'"$LAN"'", 5005))
    try:
        if s.recvfrom(65535)[0] == data[::-1]:
            print("ok"); break
    except socket.timeout:
        pass
else:
    print("no echo")')
assert_eq "4000-byte UDP datagram to the LAN echo server and back" ok "$echo_ok"
assert_counter_ge '.workers[0].fragments_out' $((fr0 + 20))

# Every error matched a connection; the gateway is fine.
assert_eq "ICMP errors that matched no connection" "$no_conn0" "$(lab_counter .drops.icmp_error_no_conn)"
assert_eq "IPv4 packets dropped as malformed" 0 "$(lab_counter .drops.ip_malformed)"
assert_eq "IPv4 packets cut short by the frame size" 0 "$(lab_counter .drops.ip_truncated)"
assert_eq "fragments whose first fragment was not seen" 0 "$(lab_counter .drops.frag_no_first)"
assert_ping_clean "the session still works" "$LAB_NS_CL" "$LAN" 20 0.05
lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
