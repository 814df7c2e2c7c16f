#!/usr/bin/env bash
# Hostile datagrams to the tunnel port while a session is up: garbage, truncated messages of each
# type, transport data for an unknown receiver index and an initiation with a bad mac1. Each is
# counted under its drop or handshake reason, and the session survives untouched.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=hostile
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
lab_wait_wg_handshake "$wg_if" 30
wait_until 10 lab_field_is '.peers[name=laptop].state' up || fail "peer laptop never came up"
wait_until 10 ping_ok "$LAB_NS_CL" "$LAB_GW_VADDR" || fail "no ping reply from $LAB_GW_VADDR before the attack"
assert_ping_clean "before: pings to $LAB_GW_VADDR" "$LAB_NS_CL" "$LAB_GW_VADDR" 100 0.01

malformed0=$(lab_counter .drops.wg_malformed)
bad_mac1_0=$(lab_counter .handshakes.bad_mac1)
unknown_index0=$(lab_counter .drops.wg_unknown_index)

# Sends the datagrams from the client's underlay address; prints "garbage truncated".
counts=$(ip netns exec "$LAB_NS_CL" python3 - "$LAB_GW_WAN_ADDR" "$LAB_WG_PORT" <<'PY'
import random, socket, struct, sys, time

dst = (sys.argv[1], int(sys.argv[2]))
rng = random.Random(0x5111CE)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.10", 0))

def send(payload):
    s.sendto(payload, dst)
    time.sleep(0.002)

def rand(n):
    return bytes(rng.getrandbits(8) for _ in range(n))

# Garbage: random bytes whose first byte is no message type (1..4).
garbage = 0
for _ in range(20):
    n = rng.randint(1, 300)
    send(bytes([rng.randint(5, 255)]) + rand(n - 1))
    garbage += 1

# Truncated (or short) messages of each type: the header says 1/2/3/4, the length is wrong.
def header(t):
    return struct.pack("<I", t)

truncated = [
    (header(1) + rand(148))[:20],    # initiation: first 20 of 148 bytes
    (header(1) + rand(148))[:147],   # initiation: one byte short
    (header(2) + rand(92))[:40],     # response: 40 of 92 bytes
    (header(3) + rand(64))[:30],     # cookie reply: 30 of 64 bytes
    (header(4) + rand(32))[:10],     # transport: shorter than its 16-byte header
    (header(4) + rand(32))[:31],     # transport: header but no room for the 16-byte tag
]
for m in truncated:
    send(m)

# Transport data for a receiver index the gateway never handed out.
for _ in range(3):
    send(header(4) + struct.pack("<IQ", rng.getrandbits(32), 0) + rand(32))

# A full-size initiation with a random (wrong) mac1 and zero mac2.
for _ in range(2):
    send(header(1) + struct.pack("<I", rng.getrandbits(32)) + rand(32 + 48 + 28) + rand(16) + bytes(16))

print(garbage, len(truncated))
PY
)
read -r garbage truncated <<<"$counts"
lab_log "sent $garbage garbage, $truncated truncated, 3 unknown-index, 2 bad-mac1 datagrams"

assert_counter_ge .drops.wg_malformed $((malformed0 + garbage + truncated)) 10
assert_counter_ge .handshakes.bad_mac1 $((bad_mac1_0 + 1)) 10
assert_counter_ge .drops.wg_unknown_index $((unknown_index0 + 1)) 10

lab_gateway_alive || fail "sluiced died under hostile input (see its log above)"
wait_until 5 lab_field_is '.peers[name=laptop].state' up || fail "peer laptop is no longer up"
lab_log "ok: sluiced running, peer laptop still up"
assert_ping_clean "after: pings to $LAB_GW_VADDR" "$LAB_NS_CL" "$LAB_GW_VADDR" 500 0.005
lab_log "PASS"
