#!/usr/bin/env bash
# Trust requirements on gateway access policies:
#  (1) require.source_ips: the client reaches the LAN host from 192.0.2.10; it roams to
#      192.0.2.20 (outside) and loses access within 1 s (an open TCP stream stops, pings fail,
#      drops.policy_deny grows) while the tunnel stays up; it roams back and access returns.
#  (2) require.attributes [mfa]: denied without an attestation, allowed after
#      `sluicectl attest laptop mfa --for 3s`, denied again within 1 s of the expiry; --revoke.
# The client roams by rewriting the source address of its WireGuard packets (nftables in the
# client's namespace, which owns both addresses): wireguard-go keeps its socket and follows the
# gateway's replies to the new address, as a laptop changing networks would.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=trust
LAB_DEADLINE_S=170
lab_require
command -v nft >/dev/null || { echo "SKIP: nft is not installed" >&2; exit 77; }
lab_init
lab_up

ROAM_ADDR=192.0.2.20
SERVER=198.51.100.30
lab_add_host lan srv "$SERVER/24"
ip -n "$LAB_NS_CL" addr add "$ROAM_ADDR/24" dev "$LAB_IF_CL"

LAB_EXTRA_YAML=$(cat <<EOF
subnets:
  - {prefix: 198.51.100.0/24, name: Office}
policies:
  - name: office
    senders: [users]
    subnets: [Office]
    filter: [$LAB_LAN_ADDR]
    require:
      source_ips: [$LAB_CL_ADDR/32]
  - name: servers
    senders: [users]
    subnets: [Office]
    filter: [$SERVER]
    require:
      attributes: [mfa]
EOF
)
lab_keygen laptop
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2 "tags: [users]" "attributes: {managed: true}"
lab_write_config
lab_start_gateway

wg_a=$(lab_wg_name a)
lab_wg_client "$wg_a" "$LAB_DIR/laptop.key" 100.64.0.2 allowed=100.64.0.0/10,198.51.100.0/24
lab_wait_wg_handshake "$wg_a" 30

# roam ADDR: the client's WireGuard packets leave from ADDR from now on.
ip netns exec "$LAB_NS_CL" nft add table ip roam
ip netns exec "$LAB_NS_CL" nft add chain ip roam out '{ type filter hook output priority -300; }'
roam() {
  ip netns exec "$LAB_NS_CL" nft flush chain ip roam out
  ip netns exec "$LAB_NS_CL" nft add rule ip roam out ip daddr "$LAB_GW_WAN_ADDR" udp dport "$LAB_WG_PORT" \
    ip saddr set "$1"
  lab_log "client roams to $1"
}
endpoint_is() { # ADDR: the gateway sees the laptop at ADDR (ping the gateway to make traffic)
  ping_ok "$LAB_NS_CL" "$LAB_GW_VADDR" || true
  [[ $(lab_get '.peers[name=laptop].endpoint' 2>/dev/null) == "$1":* ]]
}
explain() { lab_ctl explain --peer laptop --to "$1" --proto "$2" --json; }

# --- (1) source_ips ---------------------------------------------------------------------------
wait_until 10 endpoint_is "$LAB_CL_ADDR" || fail "the gateway does not see the laptop at $LAB_CL_ADDR"
wait_until 10 ping_ok "$LAB_NS_CL" "$LAB_LAN_ADDR" || fail "laptop cannot reach $LAB_LAN_ADDR from inside source_ips"
assert_ping_clean "laptop pings the LAN host from $LAB_CL_ADDR" "$LAB_NS_CL" "$LAB_LAN_ADDR" 10 0.05

timeout 60 ip netns exec "$LAB_NS_LAN" nc -l -p 6000 >"$LAB_DIR/stream" &
lab_track $! nc
lab_wait_listen "$LAB_NS_LAN" 6000
# shellcheck disable=SC2016 # the loop runs in the client's namespace
timeout 60 ip netns exec "$LAB_NS_CL" bash -c \
  'for i in $(seq 1 3000); do echo "line $i"; sleep 0.01; done | nc '"$LAB_LAN_ADDR"' 6000' >/dev/null 2>&1 &
lab_track $! bash
stream_longer_than() { (($(wc -l <"$LAB_DIR/stream") > $1)); }
wait_until 10 stream_longer_than 50 || fail "the TCP stream did not start"

gen0=$(lab_counter .config.policy_generation)
denied0=$(lab_counter .drops.policy_deny)
roam "$ROAM_ADDR"
wait_until 10 endpoint_is "$ROAM_ADDR" || fail "the gateway did not see the laptop roam to $ROAM_ADDR"
at_roam=$(wc -l <"$LAB_DIR/stream")
sleep 1
after_1s=$(wc -l <"$LAB_DIR/stream")
sleep 2
after_3s=$(wc -l <"$LAB_DIR/stream")
lab_log "stream lines: $at_roam when the roam was seen, $after_1s 1 s later, $after_3s 3 s later"
assert_eq "no stream data reaches the LAN host more than 1 s after roaming outside source_ips" "$after_1s" "$after_3s"
assert_lt "the stream was cut before it ended" "$after_3s" 3000
read -r sent recv < <(lab_ping "$LAB_NS_CL" "$LAB_LAN_ADDR" 5 0.2)
assert_eq "pings to the LAN host answered from outside source_ips" 0 "$recv"
assert_counter_ge .drops.policy_deny $((denied0 + 5))
assert_ping_clean "the tunnel stays up: the gateway's virtual address answers" "$LAB_NS_CL" "$LAB_GW_VADDR" 10 0.05
assert_gt "policy generation after the roam" "$(lab_counter .config.policy_generation)" "$gen0"
assert_ge "trust republishes" "$(lab_counter .trust.republishes)" 1
lab_log "last trust publication took $(lab_get .trust.last_publish_us) us"
out=$(explain "$LAB_LAN_ADDR" icmp)
assert_eq "explain after the roam: verdict" deny "$(json_get .verdict <<<"$out")"
assert_eq "explain after the roam: code" requirement_unmet "$(json_get .code <<<"$out")"
reason=$(json_get .reason <<<"$out")
[[ $reason == *"requires source_ips [$LAB_CL_ADDR/32]; peer endpoint $ROAM_ADDR is outside"* ]] ||
  fail "explain does not name the source_ips requirement: $reason"
lab_log "ok: explain: $reason"

roam "$LAB_CL_ADDR"
wait_until 10 endpoint_is "$LAB_CL_ADDR" || fail "the gateway did not see the laptop roam back to $LAB_CL_ADDR"
wait_until 5 ping_ok "$LAB_NS_CL" "$LAB_LAN_ADDR" || fail "access did not return after roaming back"
assert_ping_clean "laptop pings the LAN host again after roaming back" "$LAB_NS_CL" "$LAB_LAN_ADDR" 10 0.05
assert_eq "explain after roaming back" allow "$(json_get .verdict <<<"$(explain "$LAB_LAN_ADDR" icmp)")"

# --- (2) attributes ---------------------------------------------------------------------------
read -r sent recv < <(lab_ping "$LAB_NS_CL" "$SERVER" 3 0.2)
assert_eq "pings to $SERVER answered without an mfa attestation" 0 "$recv"
out=$(explain "$SERVER" icmp)
assert_eq "explain without mfa: code" requirement_unmet "$(json_get .code <<<"$out")"
[[ $(json_get .reason <<<"$out") == *"requires attributes [mfa]"* ]] || fail "explain without mfa: $(json_get .reason <<<"$out")"
assert_eq "the configured attribute is listed" config \
  "$(lab_ctl attestations --json | json_get '.attestations[attribute=managed].source')"

expect_fail "attest with a malformed duration" lab_ctl attest laptop mfa --for 3parsecs
expect_fail "attest with both --until and --for" lab_ctl attest laptop mfa --for 3s --until 2030-01-01T00:00:00Z
expect_fail "attest for an unknown peer" lab_ctl attest nobody mfa --for 3s
expect_fail "revoke a configured attribute" lab_ctl attest laptop managed --revoke

# A ping every 0.1 s with timestamps, from before the attestation until after its expiry.
ip netns exec "$LAB_NS_CL" timeout 20 ping -D -n -i 0.1 -W 1 -w 12 "$SERVER" >"$LAB_DIR/ping-mfa" 2>&1 &
ping_pid=$!
lab_track "$ping_pid" ping
sleep 0.5
out=$(lab_ctl attest laptop mfa --for 3s --json) || fail "attest laptop mfa --for 3s failed: $out"
expires_in=$(json_get .expires_in_s <<<"$out")
expiry_ms=$(python3 -c "import time; print(int(time.time() * 1000 + $expires_in * 1000))")
lab_log "attested mfa for 3 s (expires $(json_get .expires <<<"$out"))"
assert_eq "listed attestation" control "$(lab_ctl attestations --json | json_get '.attestations[attribute=mfa].source')"
wait "$ping_pid" || true
replies=$(python3 - "$LAB_DIR/ping-mfa" "$expiry_ms" <<'EOF'
import re, sys
expiry = int(sys.argv[2]) / 1000
times = [float(m.group(1)) for line in open(sys.argv[1])
         if (m := re.match(r"\[(\d+\.\d+)\] \d+ bytes from", line))]
before = [t for t in times if t < expiry]
after = [t - expiry for t in times if t >= expiry]
print(len(before), len(after), f"{max(after):.3f}" if after else "-")
EOF
)
read -r before after last_after <<<"$replies"
lab_log "mfa pings answered: $before before the expiry, $after after (last $last_after s after)"
assert_gt "pings to $SERVER answered while mfa was attested" "$before" 0
if [[ $after != 0 ]] && ! num_lt "$last_after" 1.0; then
  fail "a ping was answered $last_after s after the attestation expired"
fi
lab_log "ok: access ended within 1 s of the expiry"
read -r sent recv < <(lab_ping "$LAB_NS_CL" "$SERVER" 3 0.2)
assert_eq "pings to $SERVER after the expiry" 0 "$recv"
assert_eq "mfa attestations listed after the expiry" 0 "$(lab_ctl attestations --json |
  python3 -c 'import json, sys; print(sum(a["attribute"] == "mfa" for a in json.load(sys.stdin)["attestations"]))')"

# A permanent attestation, revoked.
expect_ok "attest mfa without expiry" lab_ctl attest laptop mfa
wait_until 5 ping_ok "$LAB_NS_CL" "$SERVER" || fail "no access with a permanent mfa attestation"
expect_ok "revoke mfa" lab_ctl attest laptop mfa --revoke
read -r sent recv < <(lab_ping "$LAB_NS_CL" "$SERVER" 3 0.2)
assert_eq "pings to $SERVER after the revocation" 0 "$recv"
expect_fail "revoke again" lab_ctl attest laptop mfa --revoke
until_ts=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
expect_ok "attest until $until_ts" lab_ctl attest laptop mfa --until "$until_ts"
wait_until 5 ping_ok "$LAB_NS_CL" "$SERVER" || fail "no access with mfa attested until $until_ts"
assert_eq "the office host is still reachable" allow "$(json_get .verdict <<<"$(explain "$LAB_LAN_ADDR" icmp)")"

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
