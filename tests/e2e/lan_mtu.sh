#!/usr/bin/env bash
# A LAN with a smaller MTU (1400) than the tunnel (1420): sluiced learns its port's MTU from the
# kernel (net_af_packet reports 1500 whatever the interface has) and, for a peer's packets that
# do not fit, answers DF ones itself with frag-needed (mtu 1400) from its virtual address and
# fragments the others. Checks: the DF ping and the path MTU the client caches, non-DF pings
# that need fragmenting both ways, TCP each way with sha256.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=lan_mtu
LAB_DEADLINE_S=120
lab_require
lab_init
lab_up

LAN=$LAB_LAN_ADDR
# The whole LAN segment at 1400: the gateway's port, the switch's ports, the LAN host.
ip -n "$LAB_NS_GW" link set "$LAB_IF_GW_LAN" mtu 1400
for port in $(ip -n "$LAB_NS_SW" -o link show master bl | awk -F': ' '{print $2}' | cut -d@ -f1); do
  ip -n "$LAB_NS_SW" link set "$port" mtu 1400
done
ip -n "$LAB_NS_LAN" link set "$LAB_IF_LAN" mtu 1400

# Reassembled replies (the kernel defragments for AF_PACKET fanout) need frames above 2048.
LAB_DEVARGS=",blocksz=8192,framesz=8192"
LAB_EXTRA_YAML='subnets:
  - {prefix: 198.51.100.0/24, name: Office}
policies:
  - name: office
    senders: [users]
    subnets: [Office]'
lab_keygen laptop
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2 "tags: [users]"
lab_write_config
lab_start_gateway

wg_if=$(lab_wg_name a)
lab_wg_client "$wg_if" "$LAB_DIR/laptop.key" 100.64.0.2 allowed=100.64.0.0/10,198.51.100.0/24
lab_wait_wg_handshake "$wg_if" 30
wait_until 10 ping_ok "$LAB_NS_CL" "$LAN" || fail "client cannot ping the LAN host $LAN"

ping_from() { # NS DST [ping options]: one echo (2 s), its output whatever the outcome
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
frag0=$(lab_counter .drops.frag_needed)
fr0=$(lab_counter '.workers[0].fragments_out')

# A DF packet that fits the tunnel but not the LAN: the gateway says so, from its own address.
out=$(ping_from "$LAB_NS_CL" "$LAN" -M "do" -s 1392)
expect_line "DF ping over the LAN's MTU" "$out" "^From $LAB_GW_VADDR icmp_seq=1 Frag needed and DF set \(mtu = 1400\)"
expect_line "the client's kernel caches the path MTU" "$(ip -n "$LAB_NS_CL" route get "$LAN")" "mtu 1400"
assert_counter_ge .drops.frag_needed $((frag0 + 1))
out=$(ping_from "$LAB_NS_CL" "$LAN" -M "do" -s 1372)
expect_line "a DF ping that fits the LAN" "$out" "1380 bytes from $LAN: icmp_seq=1"
ip netns exec "$LAB_NS_CL" sysctl -qw net.ipv4.route.flush=1

# Without DF the gateway fragments: 1420 bytes (whole in the tunnel) and 3000 (fragments in it).
assert_ping_clean "1420-byte pings without DF" "$LAB_NS_CL" "$LAN" 5 0.2 -M dont -s 1392
assert_ping_clean "3000-byte pings" "$LAB_NS_CL" "$LAN" 5 0.2 -s 3000
assert_counter_ge '.workers[0].fragments_out' $((fr0 + 10))

# TCP each way (the LAN host's MSS, 1360, keeps segments within the LAN's MTU).
head -c $((4 * 1024 * 1024)) /dev/urandom >"$LAB_DIR/blob"
want=$(sha256sum <"$LAB_DIR/blob" | cut -d' ' -f1)
timeout 40 ip netns exec "$LAB_NS_LAN" nc -l -p 5001 >"$LAB_DIR/up.bin" &
lab_track $! nc
lab_wait_listen "$LAB_NS_LAN" 5001
timeout 40 ip netns exec "$LAB_NS_CL" nc -N "$LAN" 5001 <"$LAB_DIR/blob" || fail "upload to $LAN:5001 failed"
file_has_size() { (($(stat -c %s "$1") == $2)); }
wait_until 10 file_has_size "$LAB_DIR/up.bin" $((4 * 1024 * 1024)) || true
assert_eq "sha256 of 4 MB uploaded over the 1400-byte LAN" "$want" "$(sha256sum <"$LAB_DIR/up.bin" | cut -d' ' -f1)"
timeout 40 ip netns exec "$LAB_NS_LAN" nc -N -l -p 5002 <"$LAB_DIR/blob" &
lab_track $! nc
lab_wait_listen "$LAB_NS_LAN" 5002
timeout 40 ip netns exec "$LAB_NS_CL" nc -d "$LAN" 5002 >"$LAB_DIR/down.bin" || fail "download from $LAN:5002 failed"
assert_eq "sha256 of 4 MB downloaded over the 1400-byte LAN" "$want" "$(sha256sum <"$LAB_DIR/down.bin" | cut -d' ' -f1)"

assert_eq "packets dropped as too big" 0 "$(lab_counter .drops.wg_too_big)"
assert_eq "fragments whose first fragment was not seen" 0 "$(lab_counter .drops.frag_no_first)"
lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
