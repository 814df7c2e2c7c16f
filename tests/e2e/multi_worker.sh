#!/usr/bin/env bash
# Two workers: sluiced with dataplane.workers 2 and two queue pairs per af_packet port (the
# kernel's fanout hash spreads flows over them), four wireguard-go peers in their own
# namespaces (owners alternate: peer id % 2), so tunnel packets and LAN replies often land on
# the worker that does not own them and are handed over. All at once from every peer: TCP each
# way with sha256, many UDP flows, ping. Then: both workers did work, handoffs happened, nothing
# was dropped that should not be. Lcores may outnumber CPUs (sluiced maps them onto the CPUs it
# may use), so it runs on a 2-CPU machine; idle workers sleep (idle_sleep_us).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=multi_worker
LAB_DEADLINE_S=170
lab_require
lab_init
lab_up

LAN=$LAB_LAN_ADDR
LAB_WORKERS=2
LAB_DEVARGS=",qpairs=2"
LAB_EXTRA_YAML='subnets:
  - {prefix: 198.51.100.0/24, name: Office}
policies:
  - name: office
    senders: [users]
    subnets: [Office]'

names=(a b c d)
namespaces=("$LAB_NS_CL")
for i in 1 2 3; do
  lab_add_host wan "c$i" "192.0.2.$((10 + i))/24"
  namespaces+=("$LAB_P-c$i")
done
for i in 0 1 2 3; do
  lab_keygen "p$i"
  lab_peer "p$i" "$(lab_pub "p$i")" "100.64.0.$((2 + i))" "tags: [users]"
done
lab_write_config
lab_start_gateway
assert_eq "workers" 2 "$(lab_get .workers | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')"

for i in 0 1 2 3; do
  lab_wg_client "$(lab_wg_name "${names[$i]}")" "$LAB_DIR/p$i.key" "100.64.0.$((2 + i))" \
    ns="${namespaces[$i]}" allowed=100.64.0.0/10,198.51.100.0/24
done
for i in 0 1 2 3; do
  lab_wait_wg_handshake "$(lab_wg_name "${names[$i]}")" 30 "${namespaces[$i]}"
  wait_until 10 ping_ok "${namespaces[$i]}" "$LAN" || fail "peer p$i cannot ping $LAN"
done

# Servers on the LAN host: a TCP sink and a source per peer, and a UDP echo server.
size=$((8 * 1024 * 1024))
head -c "$size" /dev/urandom >"$LAB_DIR/blob"
want=$(sha256sum <"$LAB_DIR/blob" | cut -d' ' -f1)
for i in 0 1 2 3; do
  timeout 90 ip netns exec "$LAB_NS_LAN" nc -l -p $((5100 + i)) >"$LAB_DIR/up$i.bin" &
  lab_track $! nc
  timeout 90 ip netns exec "$LAB_NS_LAN" nc -N -l -p $((5200 + i)) <"$LAB_DIR/blob" &
  lab_track $! nc
done
timeout 90 ip netns exec "$LAB_NS_LAN" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5300)); s.settimeout(60)
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data[::-1], addr)' &
lab_track $! python3
for i in 0 1 2 3; do
  lab_wait_listen "$LAB_NS_LAN" $((5100 + i))
  lab_wait_listen "$LAB_NS_LAN" $((5200 + i))
done
lab_wait_listen "$LAB_NS_LAN" 5300 udp

# Every peer at once: upload, download, 32 UDP flows (one source port each, up to 3 tries),
# 50 pings (a few may be lost to full queues while the transfers run: counted, not failed).
udp_flows() { # NS: prints how many of 32 flows got their echo back
  timeout 60 ip netns exec "$1" python3 -c '
import os, socket
ok = 0
for _ in range(32):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    data = os.urandom(200)
    for _ in range(3):
        s.sendto(data, ("'"$LAN"'", 5300))
        try:
            if s.recvfrom(2048)[0] == data[::-1]:
                ok += 1
                break
        except socket.timeout:
            pass
    s.close()
print(ok)'
}
pids=()
for i in 0 1 2 3; do
  ns=${namespaces[$i]}
  (timeout 90 ip netns exec "$ns" nc -N "$LAN" $((5100 + i)) <"$LAB_DIR/blob" || echo "upload $i failed" >>"$LAB_DIR/errors") &
  pids+=($!)
  (timeout 90 ip netns exec "$ns" nc -d "$LAN" $((5200 + i)) >"$LAB_DIR/down$i.bin" || echo "download $i failed" >>"$LAB_DIR/errors") &
  pids+=($!)
  (udp_flows "$ns" >"$LAB_DIR/udp$i") &
  pids+=($!)
  (lab_ping "$ns" "$LAN" 50 0.05 >"$LAB_DIR/ping$i") &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
[[ ! -s $LAB_DIR/errors ]] || fail "$(cat "$LAB_DIR/errors")"

file_has_size() { (($(stat -c %s "$1") == $2)); }
for i in 0 1 2 3; do
  wait_until 10 file_has_size "$LAB_DIR/up$i.bin" "$size" || true
  assert_eq "sha256 of 8 MB uploaded by peer p$i" "$want" "$(sha256sum <"$LAB_DIR/up$i.bin" | cut -d' ' -f1)"
  assert_eq "sha256 of 8 MB downloaded by peer p$i" "$want" "$(sha256sum <"$LAB_DIR/down$i.bin" | cut -d' ' -f1)"
  assert_eq "UDP flows of peer p$i answered" 32 "$(cat "$LAB_DIR/udp$i")"
  read -r sent recv <"$LAB_DIR/ping$i"
  assert_eq "pings sent by peer p$i during the transfers" 50 "$sent"
  assert_ge "pings of peer p$i answered during the transfers" "$recv" 45
done
for i in 0 1 2 3; do
  assert_ping_clean "peer p$i pings the LAN host afterwards" "${namespaces[$i]}" "$LAN" 20 0.05
done
rm -f "$LAB_DIR"/blob "$LAB_DIR"/up*.bin "$LAB_DIR"/down*.bin

# Both workers worked, and handed packets to each other.
status=$(lab_status_json)
for w in 0 1; do
  assert_gt "worker $w rx_packets" "$(json_get ".workers[$w].rx_packets" <<<"$status")" 1000
  assert_gt "worker $w tx_packets" "$(json_get ".workers[$w].tx_packets" <<<"$status")" 1000
done
assert_gt "packets worker 0 handed to worker 1" "$(json_get '.workers[0].handed_off' <<<"$status")" 0
assert_gt "packets worker 1 handed to worker 0" "$(json_get '.workers[1].handed_off' <<<"$status")" 0
for w in 0 1; do
  lab_log "worker $w: $(json_get ".workers[$w]" <<<"$status")"
done

# No drops but the lab's background noise (IPv6 and other hosts' frames on the segments) and a
# full af_packet TX ring on a loaded machine (TCP recovers; the count is logged).
lab_log "drops: $(json_get .drops <<<"$status" | python3 -c 'import json, sys; print({k: v for k, v in json.load(sys.stdin).items() if v})')"
unexpected=$(json_get .drops <<<"$status" | python3 -c '
import json, sys
noise = {"eth_unknown_type", "eth_not_for_us", "arp_not_for_us", "ip_not_for_us", "tx_full"}
d = json.load(sys.stdin)
print(" ".join(f"{k}={v}" for k, v in sorted(d.items()) if v and k not in noise))')
assert_eq "unexpected drops" "" "$unexpected"

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
