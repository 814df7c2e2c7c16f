#!/usr/bin/env bash
# Reloads while traffic flows: a wireguard-go client pings a LAN host without a break while the
# gateway reloads several policy changes, one of them ~10k ACL rules (a long compile, done off
# the control thread), through `sluicectl reload` (two at once: the second is queued) and
# SIGHUP. Every echo must be answered, each new policy must take effect (explain verdicts,
# config.policy_generation), and an invalid configuration is refused with FILE:LINE:COL while
# traffic goes on.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=reload_traffic
LAB_DEADLINE_S=170
lab_require
lab_init
lab_up

# $1: the office policy's first rule; $2: "big" adds 250 policies x 40 rules (10,000 rules) over
# single addresses of 203.0.113.0/24, Internet egress.
policies() {
  cat <<EOF
subnets:
  - {prefix: 198.51.100.0/24, name: Office}
  - {prefix: 203.0.113.0/24, name: Far}
policies:
  - name: office
    senders: [users]
    subnets: [Office]
    acl:
      - $1
      - {action: allow, protocol: any}
EOF
  if [[ ${2:-} == big ]]; then
    python3 - <<'EOF'
for p in range(250):
    # Each rule: a port (1000-3999) and a range (5000-8040): about 20k rte_acl rules.
    rules = ", ".join(
        '{action: %s, protocol: %s, ports: [%d, "%d-%d"]}' % (
            "deny" if r % 3 == 0 else "allow", "udp" if r % 5 == 0 else "tcp", 1000 + (p * 7 + r * 13) % 3000,
            5000 + (p * 11 + r * 17) % 3000, 5040 + (p * 11 + r * 17) % 3000)
        for r in range(40))
    print("  - {name: far%d, senders: [users], subnets: [Far], filter: [203.0.113.%d], acl: [%s]}" % (p, p + 1, rules))
EOF
  fi
}
DENY_6000='{action: deny, protocol: tcp, ports: [6000]}'
ALLOW_ICMP='{action: allow, protocol: icmp}'
LAB_EXTRA_YAML=$(policies "$ALLOW_ICMP")
lab_keygen laptop
lab_peer laptop "$(lab_pub laptop)" 100.64.0.2 "tags: [users]"
lab_write_config
lab_start_gateway

wg_a=$(lab_wg_name a)
lab_wg_client "$wg_a" "$LAB_DIR/laptop.key" 100.64.0.2 allowed=100.64.0.0/10,198.51.100.0/24,203.0.113.0/24
lab_wait_wg_handshake "$wg_a" 30
wait_until 10 ping_ok "$LAB_NS_CL" "$LAB_LAN_ADDR" || fail "the client cannot reach $LAB_LAN_ADDR"

verdict() { # PEER ADDRESS PROTO PORT
  lab_ctl explain --peer "$1" --to "$2:$4" --proto "$3" --json | json_get .verdict
}
generation() { lab_get .config.policy_generation; }
generation_is() { [[ $(generation 2>/dev/null) == "$1" ]]; }
# The reply waits for the compile: far longer than sluicectl's default 5 s on a loaded machine.
reload() { timeout 150 "$SLUICECTL" --socket "$LAB_SOCKET" --timeout 140 reload; }

# Steady traffic: 50-echo rounds, 20 ms apart, until told to stop; each round waits for its last
# replies, so rounds add up to exact sent/received counts.
stop_file=$LAB_DIR/traffic.stop
counts=$LAB_DIR/traffic.counts
: >"$counts"
(
  while [[ ! -e $stop_file ]]; do
    # -w: wait for every reply (up to 11 s), not two round trips after the last echo: a reply
    # delayed by a busy machine is late, not lost.
    lab_ping "$LAB_NS_CL" "$LAB_LAN_ADDR" 50 0.02 -w 11 >>"$counts"
  done
) &
lab_track $! bash
traffic_pid=$!
rounds() { wc -l <"$counts"; }
rounds_over() { (($(rounds) > $1)); }
wait_until 30 rounds_over 0 || fail "the traffic did not start"

gen=$(generation)
assert_eq "tcp/6000 before any reload" allow "$(verdict laptop "$LAB_LAN_ADDR" tcp 6000)"

# 1. A small change through the control socket.
LAB_EXTRA_YAML=$(policies "$DENY_6000")
lab_write_config
expect_ok "sluicectl reload: deny tcp/6000" reload
assert_eq "policy generation after the first reload" $((gen + 1)) "$(generation)"
assert_eq "tcp/6000 after the first reload" deny "$(verdict laptop "$LAB_LAN_ADDR" tcp 6000)"

# 2. 10,000 rules, two reloads at once: the second waits behind the first (one compile at a
# time) and reads the file again. The control thread answers status meanwhile.
LAB_EXTRA_YAML=$(policies "$DENY_6000" big)
lab_write_config
assert_eq "far address before the big policy" deny "$(verdict laptop 203.0.113.5 tcp 1041)"
reload >"$LAB_DIR/reload1.out" 2>&1 &
r1=$!
lab_track $r1 sluicectl
reload >"$LAB_DIR/reload2.out" 2>&1 &
r2=$!
lab_track $r2 sluicectl
busy=0 answered=0
while lab_pid_alive "$r1" || lab_pid_alive "$r2"; do
  if st=$(lab_status_json 2>/dev/null); then
    answered=$((answered + 1))
    [[ $(json_get .config.reload_in_progress <<<"$st") == true ]] && busy=$((busy + 1))
  fi
  sleep 0.2
done
wait "$r1" || fail "the first big reload failed: $(cat "$LAB_DIR/reload1.out")"
wait "$r2" || fail "the second big reload failed: $(cat "$LAB_DIR/reload2.out")"
lab_log "status answered $answered times during the big reloads ($busy with a compile in progress)"
assert_eq "policy generation after the two big reloads" $((gen + 3)) "$(generation)"
# far4 (203.0.113.5): its rule 1 allows tcp 1041, rule 3 denies tcp 1067.
assert_eq "the big policy allows its rule 1's port" allow "$(verdict laptop 203.0.113.5 tcp 1041)"
explained=$(lab_ctl explain --peer laptop --to 203.0.113.5:1067 --proto tcp --json)
assert_eq "the big policy's rule 3 denies" "deny far4 3" \
  "$(json_get .verdict <<<"$explained") $(json_get .policy <<<"$explained") $(json_get .rule <<<"$explained")"
lab_log "compiles: $(grep -c 'event=policy_compiled' "$LAB_GW_LOG" || true), queued behind one: $(grep -c 'event=reload_queued' "$LAB_GW_LOG" || true); last: $(grep 'event=policy_compiled' "$LAB_GW_LOG" | tail -n 1)"

# 3. SIGHUP: back to the small policy without the deny.
LAB_EXTRA_YAML=$(policies "$ALLOW_ICMP")
lab_write_config
kill -HUP "$LAB_GW_PID"
wait_until 60 generation_is $((gen + 4)) || fail "SIGHUP reload did not reach generation $((gen + 4)) (at $(generation))"
assert_eq "tcp/6000 after the SIGHUP reload" allow "$(verdict laptop "$LAB_LAN_ADDR" tcp 6000)"

# 4. An invalid configuration is refused with its position; the running one stays.
printf '\npolicies: [\n' >>"$LAB_CONFIG"
out=$(reload 2>&1) && fail "a broken configuration was accepted"
grep -qE "$(basename "$LAB_CONFIG"):[0-9]+:[0-9]+: " <<<"$out" || fail "reload error without FILE:LINE:COL: $out"
lab_log "ok: broken configuration refused: $(tail -n 1 <<<"$out")"
assert_eq "policy generation unchanged by the refused reload" $((gen + 4)) "$(generation)"

# A few more rounds after the last change, then the count.
target=$(($(rounds) + 2))
wait_until 60 rounds_over $((target - 1)) || fail "the traffic stalled"
touch "$stop_file"
traffic_stopped() { ! lab_pid_alive "$traffic_pid"; }
wait_until 30 traffic_stopped || fail "the traffic loop did not stop"
read -r sent recv < <(awk '{s += $1; r += $2} END {print s + 0, r + 0}' "$counts")
lab_log "traffic during the reloads: $recv of $sent echoes answered in $(rounds) rounds"
assert_ge "echo requests sent" "$sent" 200
assert_eq "echo replies (zero loss across the reloads)" "$sent" "$recv"
assert_eq "reloads counted" 4 "$(lab_get .config.reloads)"

lab_gateway_alive || fail "sluiced is no longer running"
lab_log "PASS"
