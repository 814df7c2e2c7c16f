#!/usr/bin/env bash
# sluicectl against a running sluiced: `policies` lists each policy with its numbered ACL and the peers it
# applies to now, `status` shows each peer's "Gateway for" and ACLs, both in text and with --json; a reload
# that changes a peer's tags changes who is in which policy; every command answers --json with JSON.
# No WireGuard client is needed: policy membership comes from tags (and trust requirements).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/lab.sh
source "${LAB_ROOT:-$here/../..}/scripts/lib/lab.sh"
LAB_NAME=ctl_policies
LAB_DEADLINE_S=120
lab_require
lab_init
lab_up

LAB_EXTRA_YAML=$(
  cat <<'EOF2'
subnets:
  - {prefix: 198.51.100.0/24, name: Office LAN}
policies:
  - name: printers
    senders: [users]
    subnets: [Office LAN]
    filter: [198.51.100.10, 198.51.100.20-198.51.100.29, 198.51.100.64/28]
    acl:
      - {action: deny, protocol: tcp, ports: [22]}
      - {action: allow, protocol: tcp, ports: [80, 631]}
      - {action: allow, protocol: icmp}
  - name: lab
    senders: [devs]
    subnets: [Office LAN]
    gateway_priority: ordered
EOF2
)
lab_keygen laptop
lab_keygen devbox
lab_keygen guest
peers() { # the guest's tags
  : >"$LAB_PEERS_FILE"
  lab_peer laptop "$(lab_pub laptop)" 100.64.0.2 "tags: [users]"
  lab_peer devbox "$(lab_pub devbox)" 100.64.0.3 "tags: [devs, users]"
  lab_peer guest "$(lab_pub guest)" 100.64.0.4 "tags: [$1]"
}
peers guests
lab_write_config
lab_start_gateway

# --- policies --json -------------------------------------------------------------------------------
pol=$(lab_ctl policies --json)
assert_eq "printers applies to" '["laptop", "devbox"]' "$(json_get '.policies[name=printers].peers' <<<"$pol")"
assert_eq "lab applies to" '["devbox"]' "$(json_get '.policies[name=lab].peers' <<<"$pol")"
assert_eq "printers' rule 0" "deny tcp 22" "$(json_get '.policies[name=printers].acl[0].text' <<<"$pol")"
assert_eq "printers' rule 1" "allow tcp 80,631" "$(json_get '.policies[name=printers].acl[1].text' <<<"$pol")"
assert_eq "printers' rule 2 index" 2 "$(json_get '.policies[name=printers].acl[2].index' <<<"$pol")"
assert_eq "printers' filter" '["198.51.100.10", "198.51.100.20-198.51.100.29", "198.51.100.64/28"]' \
  "$(json_get '.policies[name=printers].filter' <<<"$pol")"
assert_eq "lab's subnets" '[{"name": "Office LAN", "prefix": "198.51.100.0/24"}]' \
  "$(json_get '.policies[name=lab].subnets' <<<"$pol")"
assert_eq "lab's default ACL" "allow any" "$(json_get '.policies[name=lab].acl[0].text' <<<"$pol")"
assert_eq "lab's gateway priority" ordered "$(json_get '.policies[name=lab].gateway_priority' <<<"$pol")"
gen=$(json_get .policy_generation <<<"$pol")

# --- policies, text ----------------------------------------------------------------------------------
text=$(lab_ctl policies)
grep -qxF "Policy: printers" <<<"$text" || fail "no 'Policy: printers' block in:"$'\n'"$text"
grep -qxF "   ACL . . . . . . . . : 0: deny tcp 22" <<<"$text" || fail "no numbered ACL in:"$'\n'"$text"
grep -qxF "                         2: allow icmp" <<<"$text" || fail "no rule 2 under the ACL in:"$'\n'"$text"
grep -qxF "   Peers . . . . . . . : laptop, devbox" <<<"$text" || fail "no peers line in:"$'\n'"$text"
lab_log "ok: sluicectl policies"

# --- status: Gateway for and ACLs --------------------------------------------------------------------
st=$(lab_status_json)
assert_eq "laptop is gateway for" '["198.51.100.10", "198.51.100.20-198.51.100.29", "198.51.100.64/28"]' \
  "$(json_get '.peers[name=laptop].gateway_for' <<<"$st")"
assert_eq "devbox is gateway for" \
  '["198.51.100.10", "198.51.100.20-198.51.100.29", "198.51.100.64/28", "198.51.100.0/24 (Office LAN)"]' \
  "$(json_get '.peers[name=devbox].gateway_for' <<<"$st")"
assert_eq "guest is gateway for" '[]' "$(json_get '.peers[name=guest].gateway_for' <<<"$st")"
assert_eq "devbox's ACL rules" 4 "$(json_get '.peers[name=devbox].acls' <<<"$st" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
text=$(lab_ctl status)
block=$(awk '/^Peer: laptop$/ { on = 1 } on && /^$/ { exit } on' <<<"$text")
grep -qxF "   Gateway for . . . . : 198.51.100.10, 198.51.100.20-198.51.100.29, 198.51.100.64/28" <<<"$block" ||
  fail "no Gateway for line for laptop in:"$'\n'"$block"
grep -qxF "   ACLs. . . . . . . . : deny [tcp/22] from peer -> printers, allow [tcp/80,631] from peer -> printers, allow [icmp] from peer -> printers" <<<"$block" ||
  fail "no ACLs line for laptop in:"$'\n'"$block"
lab_log "ok: sluicectl status shows Gateway for and ACLs"

# --- a reload that changes tags changes membership ------------------------------------------------------
peers users
lab_write_config
expect_ok "reload with the guest tagged users" lab_ctl reload
pol=$(lab_ctl policies --json)
assert_eq "printers applies to, after the reload" '["laptop", "devbox", "guest"]' \
  "$(json_get '.policies[name=printers].peers' <<<"$pol")"
assert_gt "policy generation after the reload" "$(json_get .policy_generation <<<"$pol")" "$gen"
assert_eq "guest is gateway for, after the reload" '["198.51.100.10", "198.51.100.20-198.51.100.29", "198.51.100.64/28"]' \
  "$(lab_get '.peers[name=guest].gateway_for')"

# --- every command answers --json with JSON ------------------------------------------------------------
is_json() { python3 -c 'import json,sys; json.load(sys.stdin)'; }
for cmd in "status" "peers" "policies" "conntrack" "neighbors" "reload" \
  "explain --peer laptop --to 198.51.100.10:22 --proto tcp"; do
  # shellcheck disable=SC2086 # the words of $cmd are the arguments
  out=$(lab_ctl $cmd --json) || fail "sluicectl $cmd --json failed"
  is_json <<<"$out" || fail "sluicectl $cmd --json is not JSON:"$'\n'"$out"
done
# subnets may not be served yet by this gateway: when it answers, it is JSON.
if out=$(lab_ctl subnets --json 2>/dev/null); then
  is_json <<<"$out" || fail "sluicectl subnets --json is not JSON:"$'\n'"$out"
fi
assert_eq "explain --json verdict" deny "$(lab_ctl explain --peer laptop --to 198.51.100.10:22 --proto tcp --json | json_get .verdict)"
lab_log "ok: every command answers --json"
lab_log "PASS"
