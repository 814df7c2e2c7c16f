# shellcheck shell=bash
# A network-namespace lab around sluiced, shared by the end-to-end tests and the demo.
#
#   client ns  (<p>-cl)   <p>-cl0 192.0.2.10/24, wireguard-go clients
#        |  underlay bridge "bw" in <p>-sw
#   gateway ns (<p>-gw)   <p>-gw0 (wan) and <p>-gw1 (lan): no kernel address, opened by sluiced
#        |  (net_af_packet), which answers as 192.0.2.2 and 198.51.100.1
#        |  lan bridge "bl" in <p>-sw
#   lan ns     (<p>-lan)  <p>-ln0 198.51.100.10/24, plus optional extra hosts (lab_add_host)
#
# Every name starts with the run's prefix (<p> = sl<pid> by default) so runs never collide, and
# lab_down can find everything a run made. Only the documentation address blocks are used.
#
# Usage in a test:
#   source scripts/lib/lab.sh
#   lab_require            # exit 77 (skip) without root, wireguard-go, wg, python3
#   lab_init               # names, temp dir, cleanup trap
#   lab_up
#   lab_keygen gateway; lab_keygen laptop
#   lab_peer laptop "$(lab_pub laptop)" 100.64.0.2
#   lab_write_config
#   lab_start_gateway
#   lab_wg_client "$(lab_wg_name a)" "$LAB_DIR/laptop.key" 100.64.0.2

LAB_ROOT=${LAB_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
SLUICED=${SLUICED:-$LAB_ROOT/build/sluiced}
SLUICECTL=${SLUICECTL:-$LAB_ROOT/build/sluicectl}

# EAL arguments sluiced gets in the lab: change them here (or with SLUICE_LAB_EAL_ARGS, space separated).
# No hugepages and no PCI on lab machines. Not --in-memory: DPDK 22.11 refuses it with --no-huge
# (legacy memory); sluiced adds a per-process --file-prefix and --no-shconf itself instead, so
# concurrent instances share no runtime files.
if [[ -n ${SLUICE_LAB_EAL_ARGS:-} ]]; then
  read -r -a LAB_EAL_ARGS <<<"$SLUICE_LAB_EAL_ARGS"
else
  LAB_EAL_ARGS=(--no-huge -m 512 --no-pci)
fi

# The lab's addresses (spec README: documentation and shared address blocks only).
LAB_CL_ADDR=192.0.2.10
LAB_GW_WAN_ADDR=192.0.2.2
LAB_GW_LAN_ADDR=198.51.100.1
LAB_LAN_ADDR=198.51.100.10
LAB_GW_VADDR=100.64.0.1
LAB_OVERLAY=100.64.0.0/10
LAB_WG_PORT=51820
LAB_MTU=1420

# ---------------------------------------------------------------------------------------------
# Logging, waiting and assertions

lab_log() { printf '[%s %s] %s\n' "$(date +%T.%3N)" "${LAB_NAME:-lab}" "$*" >&2; }
fail() {
  lab_log "FAIL: $*"
  exit 1
}

# Seconds since the epoch with microseconds, as an integer count of milliseconds.
_lab_now_ms() {
  local t=${EPOCHREALTIME/./}
  echo $((t / 1000))
}

# wait_until TIMEOUT_S CMD...: runs CMD every 0.2 s until it succeeds (0) or TIMEOUT_S pass (1).
wait_until() {
  local timeout=$1
  shift
  local deadline=$(($(_lab_now_ms) + timeout * 1000))
  while true; do
    if "$@"; then
      return 0
    fi
    (($(_lab_now_ms) < deadline)) || return 1
    sleep 0.2
  done
}

assert_eq() { # DESCRIPTION EXPECTED SEEN
  if [[ $2 != "$3" ]]; then fail "$1: expected '$2', saw '$3'"; fi
  lab_log "ok: $1 = $3"
}
assert_ge() { # DESCRIPTION SEEN MIN
  [[ $2 =~ ^-?[0-9]+$ ]] || fail "$1: expected a number >= $3, saw '$2'"
  (($2 >= $3)) || fail "$1: expected >= $3, saw $2"
  lab_log "ok: $1 = $2 (>= $3)"
}
assert_gt() { # DESCRIPTION SEEN MIN
  [[ $2 =~ ^-?[0-9]+$ ]] || fail "$1: expected a number > $3, saw '$2'"
  (($2 > $3)) || fail "$1: expected > $3, saw $2"
  lab_log "ok: $1 = $2 (> $3)"
}
assert_lt() { # DESCRIPTION SEEN MAX
  [[ $2 =~ ^-?[0-9]+$ ]] || fail "$1: expected a number < $3, saw '$2'"
  (($2 < $3)) || fail "$1: expected < $3, saw $2"
  lab_log "ok: $1 = $2 (< $3)"
}
expect_ok() { # DESCRIPTION CMD...: CMD must succeed; its output is shown when it does not
  local desc=$1 out
  shift
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" | tail -n 20 >&2
    fail "$desc: command failed: $*"
  fi
  lab_log "ok: $desc"
}
expect_fail() { # DESCRIPTION CMD...: CMD must fail
  local desc=$1
  shift
  if "$@" >/dev/null 2>&1; then fail "$desc: expected failure, but it succeeded: $*"; fi
  lab_log "ok: $desc (failed as expected)"
}

# json_get PATH < JSON: prints one field. PATH is like .peers[0].state, .drops.wg_malformed or
# .peers[name=laptop].state. Strings print bare, booleans as true/false, objects as JSON.
# A {"ok": ..., "result": ...} envelope is looked through. Fails (1) when the path is absent.
json_get() {
  python3 -c '
import json, re, sys
path = sys.argv[1]
try:
    doc = json.load(sys.stdin)
except ValueError as e:
    sys.exit(f"json_get: input is not JSON: {e}")
token = r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\[([\w-]+)=([^\]]*)\]"
if not re.fullmatch(f"(?:{token})+", path):
    sys.exit(f"json_get: cannot parse path {path!r}")
tokens = re.findall(token, path)
if isinstance(doc, dict) and "result" in doc and "ok" in doc and tokens and tokens[0][0] not in doc:
    doc = doc["result"]
cur = doc
for key, index, fkey, fval in tokens:
    try:
        if key:
            cur = cur[key]
        elif index:
            cur = cur[int(index)]
        else:
            cur = next(x for x in cur if str(x.get(fkey)) == fval)
    except (KeyError, IndexError, TypeError, StopIteration, AttributeError):
        sys.exit(f"json_get: {path} not found")
if isinstance(cur, bool):
    print("true" if cur else "false")
elif cur is None:
    print("null")
elif isinstance(cur, (dict, list)):
    print(json.dumps(cur))
else:
    print(cur)
' "$1"
}

# ---------------------------------------------------------------------------------------------
# Setup and teardown

# Exits 77 (meson's "skipped") when the lab cannot run here: never pass without testing.
lab_require() {
  if ((EUID != 0)); then
    echo "SKIP: the lab needs root (network namespaces)" >&2
    exit 77
  fi
  local tool
  for tool in wireguard-go wg ip python3 ethtool ping; do
    if ! command -v "$tool" >/dev/null; then
      echo "SKIP: $tool is not installed (scripts/setup installs it)" >&2
      exit 77
    fi
  done
  if [[ ! -c /dev/net/tun ]]; then
    echo "SKIP: /dev/net/tun is missing (wireguard-go needs it)" >&2
    exit 77
  fi
}

# lab_init [PREFIX [DIR]]: names for this run; DIR (default: a fresh temp dir, removed by lab_down)
# holds keys, config, logs and the control socket. Unless LAB_NO_TRAP=1, installs the cleanup trap
# and a watchdog that ends the run (cleanup included) after LAB_DEADLINE_S seconds (default 120).
# shellcheck disable=SC2120 # both arguments are optional
lab_init() {
  LAB_P=${1:-sl$$}
  if ((${#LAB_P} > 10)); then
    fail "lab prefix '$LAB_P' is too long for interface names (max 10)"
  fi
  if [[ -n ${2:-} ]]; then
    LAB_DIR=$2
    LAB_RM_DIR=${LAB_RM_DIR:-0}
    mkdir -p "$LAB_DIR"
  else
    LAB_DIR=$(mktemp -d "/tmp/sluice-lab-$LAB_P.XXXXXX")
    LAB_RM_DIR=1
  fi
  chmod 700 "$LAB_DIR"
  LAB_NS_CL=$LAB_P-cl
  LAB_NS_GW=$LAB_P-gw
  LAB_NS_LAN=$LAB_P-lan
  LAB_NS_SW=$LAB_P-sw
  LAB_IF_CL=$LAB_P-cl0
  LAB_IF_GW_WAN=$LAB_P-gw0
  LAB_IF_GW_LAN=$LAB_P-gw1
  LAB_IF_LAN=$LAB_P-ln0
  LAB_CONFIG=$LAB_DIR/gateway.yaml
  LAB_SOCKET=$LAB_DIR/sluice.sock
  LAB_GW_LOG=$LAB_DIR/sluiced.log
  LAB_PEERS_FILE=$LAB_DIR/peers.yaml
  LAB_EXTRA_YAML=${LAB_EXTRA_YAML:-}
  LAB_GW_PID=
  LAB_SW_PORTS=0
  touch "$LAB_DIR/pids" "$LAB_DIR/wgifs"
  : >"$LAB_PEERS_FILE"
  if [[ ${LAB_NO_TRAP:-0} != 1 ]]; then
    trap lab_on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    _lab_watchdog "${LAB_DEADLINE_S:-120}" "$$" </dev/null &
    lab_track "$!" bash
  fi
}

# Sends TERM to OWNER after LIMIT seconds unless stopped first (lab_down TERMs it). Bash runs its
# trap only when the foreground command ends, so that command (a sleep, a ping) is ended as well;
# the lab's own processes are left to the cleanup, which still reads their state.
_lab_watchdog() {
  local limit=$1 owner=$2 pid
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "$limit" &
  sleeper=$!
  wait "$sleeper"
  lab_log "FAIL: the test ran past its ${limit}s deadline"
  kill -TERM "$owner"
  for pid in $(pgrep -P "$owner"); do
    [[ $pid == "$BASHPID" ]] && continue
    grep -q "^$pid " "$LAB_DIR/pids" 2>/dev/null && continue
    kill -TERM "$pid" 2>/dev/null || true
  done
}

# The EXIT trap: on failure show what the gateway and the clients saw, then tear everything down.
lab_on_exit() {
  local rc=$?
  trap - EXIT
  if ((rc != 0 && rc != 77)); then
    lab_diagnose || true
  fi
  lab_down || true
  exit "$rc"
}

lab_diagnose() {
  [[ -n ${LAB_DIR:-} && -d $LAB_DIR ]] || return 0
  echo "----- diagnostics ($LAB_P) -----" >&2
  if [[ -s $LAB_GW_LOG ]]; then
    echo "--- sluiced log (last 60 lines) ---" >&2
    tail -n 60 "$LAB_GW_LOG" >&2
  fi
  if [[ -S $LAB_SOCKET ]]; then
    echo "--- sluicectl status ---" >&2
    timeout 5 "$SLUICECTL" --socket "$LAB_SOCKET" status >&2 2>&1 || true
  fi
  local ifname
  while read -r ifname; do
    [[ -n $ifname && -f $LAB_DIR/$ifname.pid ]] || continue
    echo "--- wg show $ifname ---" >&2
    timeout 5 wg show "$ifname" >&2 2>&1 || true
    if [[ -s $LAB_DIR/$ifname.log ]]; then tail -n 20 "$LAB_DIR/$ifname.log" >&2; fi
  done <"$LAB_DIR/wgifs"
  echo "----- end of diagnostics -----" >&2
}

# Records a process the lab started, with the command name it will have, for lab_down.
lab_track() { echo "$1 $2" >>"$LAB_DIR/pids"; }

lab_pid_alive() { # PID: running (a zombie is not)
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# Sends TERM to the PIDs, waits up to 5 s for them to go, then KILLs what is left.
_lab_kill() {
  local pid left i
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    left=()
    for pid in "$@"; do lab_pid_alive "$pid" && left+=("$pid"); done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
  kill -KILL "${left[@]}" 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do
    left=()
    for pid in "$@"; do lab_pid_alive "$pid" && left+=("$pid"); done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
}

_lab_netns_list() { # PREFIX: our namespaces
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$1-" || true
}

# lab_down: stops every process of the lab, deletes its namespaces, veths, wireguard-go sockets and
# (if lab_init made it) its directory. Idempotent; safe to call at any point.
lab_down() {
  [[ -n ${LAB_P:-} ]] || return 0
  local pids=() pid name ns comm
  if [[ -n ${LAB_DIR:-} && -f $LAB_DIR/pids ]]; then
    while read -r pid name; do
      [[ $pid =~ ^[0-9]+$ ]] || continue
      comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
      # A recorded PID may have been reused since: only signal what still looks like ours.
      [[ $comm == "${name:0:15}" ]] && pids+=("$pid")
    done <"$LAB_DIR/pids"
  fi
  local namespaces
  mapfile -t namespaces < <(_lab_netns_list "$LAB_P")
  for ns in "${namespaces[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do pids+=("$pid"); done
  done
  _lab_kill "${pids[@]}"
  for ns in "${namespaces[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  # Veths are made inside the namespaces and go with them; catch any made in the root namespace.
  local link
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^$LAB_P-" || true); do
    ip link del "$link" 2>/dev/null || true
  done
  # wireguard-go's UAPI socket directory is global across namespaces; a killed one leaves its socket.
  rm -f /var/run/wireguard/"$LAB_P"-*.sock 2>/dev/null || true
  if [[ ${LAB_RM_DIR:-0} == 1 && -n ${LAB_DIR:-} && -d $LAB_DIR ]]; then
    rm -rf "$LAB_DIR"
  fi
  LAB_GW_PID=
}

# Removes labs of test runs that died without cleaning up (their owner PID is gone).
lab_reap_stale() {
  local owner
  for owner in $(ip netns list 2>/dev/null | awk '{print $1}' | sed -n 's/^sl\([0-9]\+\)-.*/\1/p' | sort -u); do
    [[ sl$owner == "$LAB_P" ]] && continue
    kill -0 "$owner" 2>/dev/null && continue
    lab_log "removing stale lab sl$owner"
    (LAB_P=sl$owner LAB_DIR='' LAB_RM_DIR=0 lab_down)
    rm -rf /tmp/sluice-lab-"sl$owner".* 2>/dev/null || true
  done
}

# Turns off TX checksum offload: veths hand partially checksummed packets to AF_PACKET readers.
_lab_no_offload() { # NS IF
  ip netns exec "$1" ethtool -K "$2" tx off >/dev/null 2>&1 || fail "ethtool -K $2 tx off failed in $1"
}

# _lab_wire NS IF SEGMENT(bw|bl): a veth from NS (named IF) to the switch bridge of that segment.
_lab_wire() {
  local ns=$1 ifname=$2 bridge=$3
  local port=$LAB_P-s$LAB_SW_PORTS
  LAB_SW_PORTS=$((LAB_SW_PORTS + 1))
  ip -n "$ns" link add "$ifname" type veth peer name "$port" netns "$LAB_NS_SW"
  ip -n "$LAB_NS_SW" link set "$port" master "$bridge" up
  _lab_no_offload "$LAB_NS_SW" "$port"
  _lab_no_offload "$ns" "$ifname"
}

_lab_netns_add() { # NS
  ip netns add "$1"
  ip -n "$1" link set lo up
}

_lab_no_ipv6() { # NS: for namespaces whose interfaces the kernel should stay silent on
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

lab_up() {
  lab_reap_stale
  local ns
  for ns in "$LAB_NS_CL" "$LAB_NS_GW" "$LAB_NS_LAN" "$LAB_NS_SW"; do
    if ip netns list | awk '{print $1}' | grep -qxF "$ns"; then
      fail "namespace $ns already exists (another run with prefix $LAB_P?)"
    fi
  done
  lab_log "lab up: namespaces $LAB_P-{cl,gw,lan,sw}, dir $LAB_DIR"
  for ns in "$LAB_NS_SW" "$LAB_NS_GW" "$LAB_NS_CL" "$LAB_NS_LAN"; do _lab_netns_add "$ns"; done
  # The switch: one bridge per segment, so extra hosts can join either.
  _lab_no_ipv6 "$LAB_NS_SW"
  ip -n "$LAB_NS_SW" link add bw type bridge
  ip -n "$LAB_NS_SW" link add bl type bridge
  ip -n "$LAB_NS_SW" link set bw up
  ip -n "$LAB_NS_SW" link set bl up
  # The gateway's ports: up, no kernel address, no IPv6 chatter from the kernel; sluiced owns them.
  _lab_no_ipv6 "$LAB_NS_GW"
  _lab_wire "$LAB_NS_GW" "$LAB_IF_GW_WAN" bw
  _lab_wire "$LAB_NS_GW" "$LAB_IF_GW_LAN" bl
  ip -n "$LAB_NS_GW" link set "$LAB_IF_GW_WAN" up
  ip -n "$LAB_NS_GW" link set "$LAB_IF_GW_LAN" up
  # The client on the underlay.
  _lab_wire "$LAB_NS_CL" "$LAB_IF_CL" bw
  ip -n "$LAB_NS_CL" addr add "$LAB_CL_ADDR/24" dev "$LAB_IF_CL"
  ip -n "$LAB_NS_CL" link set "$LAB_IF_CL" up
  # The LAN host.
  _lab_wire "$LAB_NS_LAN" "$LAB_IF_LAN" bl
  ip -n "$LAB_NS_LAN" addr add "$LAB_LAN_ADDR/24" dev "$LAB_IF_LAN"
  ip -n "$LAB_NS_LAN" link set "$LAB_IF_LAN" up
}

# lab_add_host wan|lan ROLE ADDR/PLEN [DEFAULT_GW]: one more host in its own namespace <p>-ROLE on
# the underlay or the LAN segment. ROLE: up to 4 letters. Prints nothing; the namespace is <p>-ROLE.
lab_add_host() {
  local seg=$1 role=$2 addr=$3 via=${4:-}
  local bridge
  case $seg in
    wan) bridge=bw ;;
    lan) bridge=bl ;;
    *) fail "lab_add_host: segment must be wan or lan, not '$seg'" ;;
  esac
  ((${#role} <= 4)) || fail "lab_add_host: role '$role' longer than 4 characters"
  local ns=$LAB_P-$role ifname=$LAB_P-${role}0
  _lab_netns_add "$ns"
  _lab_wire "$ns" "$ifname" "$bridge"
  ip -n "$ns" addr add "$addr" dev "$ifname"
  ip -n "$ns" link set "$ifname" up
  if [[ -n $via ]]; then ip -n "$ns" route add default via "$via"; fi
}

# ---------------------------------------------------------------------------------------------
# Keys and the gateway's configuration

# lab_keygen NAME: $LAB_DIR/NAME.key (private) and $LAB_DIR/NAME.pub.
lab_keygen() {
  (umask 077 && wg genkey | tee "$LAB_DIR/$1.key" | wg pubkey >"$LAB_DIR/$1.pub")
}
lab_pub() { cat "$LAB_DIR/$1.pub"; }

# lab_peer NAME PUBLIC_KEY VIRTUAL_ADDRESS ["key: value" ...]: adds a peer to the next config.
lab_peer() {
  local name=$1 pub=$2 vaddr=$3 line
  shift 3
  {
    printf '  - name: %s\n    public_key: "%s"\n    virtual_address: %s\n' "$name" "$pub" "$vaddr"
    for line in "$@"; do printf '    %s\n' "$line"; done
  } >>"$LAB_PEERS_FILE"
}

# A free TCP port on the loopback of a namespace.
lab_free_port() { # NS
  ip netns exec "$1" python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# lab_write_config: $LAB_CONFIG for the gateway (key $LAB_DIR/gateway.key, made if missing), with the
# peers from lab_peer and LAB_EXTRA_YAML (top-level sections such as subnets or policies) appended.
# control.watch_config is LAB_WATCH_CONFIG (default false: tests that edit the file reload it
# themselves, and a second reload by the watch would race their generation checks).
# LAB_WORKERS (default 1), LAB_IDLE_SLEEP_US (50) and LAB_DEVARGS (appended to both ports'
# devargs, e.g. ",qpairs=2" or ",framesz=8192,blocksz=8192") shape the dataplane section.
lab_write_config() {
  [[ -f $LAB_DIR/gateway.key ]] || lab_keygen gateway
  mkdir -p "$LAB_DIR/state"
  local eal="" a port
  for a in "${LAB_EAL_ARGS[@]}"; do eal+="${eal:+, }\"$a\""; done
  # Chosen once: a later config keeps it (a reload cannot move metrics.listen).
  port=${LAB_METRICS_PORT:-$(lab_free_port "$LAB_NS_GW")}
  LAB_METRICS_PORT=$port
  LAB_METRICS="127.0.0.1:$port"
  {
    cat <<EOF
# Written by scripts/lib/lab.sh for lab $LAB_P.
gateway:
  name: lab-$LAB_P
  private_key_file: $LAB_DIR/gateway.key
  listen_port: $LAB_WG_PORT
  virtual_address: $LAB_GW_VADDR
  mtu: $LAB_MTU
  state_dir: $LAB_DIR/state
${LAB_GATEWAY_EXTRA:+$LAB_GATEWAY_EXTRA
}
dataplane:
  eal_args: [$eal]
  workers: ${LAB_WORKERS:-1}
  idle_sleep_us: ${LAB_IDLE_SLEEP_US:-50}
  ports:
    - name: wan
      role: underlay
      device: "net_af_packet0,iface=$LAB_IF_GW_WAN${LAB_DEVARGS:-}"
      address: $LAB_GW_WAN_ADDR/24
${LAB_WAN_GATEWAY:+      gateway: $LAB_WAN_GATEWAY
}    - name: lan
      role: lan
      device: "net_af_packet1,iface=$LAB_IF_GW_LAN${LAB_DEVARGS:-}"
      address: $LAB_GW_LAN_ADDR/24

EOF
    if [[ -s $LAB_PEERS_FILE ]]; then
      echo "peers:"
      cat "$LAB_PEERS_FILE"
    else
      echo "peers: []"
    fi
    cat <<EOF

dns:
  enabled: false

metrics:
  listen: $LAB_METRICS

control:
  socket: $LAB_SOCKET
  watch_config: ${LAB_WATCH_CONFIG:-false}
EOF
    if [[ -n $LAB_EXTRA_YAML ]]; then printf '\n%s\n' "$LAB_EXTRA_YAML"; fi
  } >"$LAB_CONFIG"
}

# ---------------------------------------------------------------------------------------------
# The gateway

lab_ctl() { timeout 10 "$SLUICECTL" --socket "$LAB_SOCKET" "$@"; }
lab_status_json() { lab_ctl status --json; }
# lab_get PATH: one field of `sluicectl status --json` (see json_get).
lab_get() {
  local out
  out=$(lab_status_json) || return 1
  json_get "$1" <<<"$out"
}
# lab_field_is PATH VALUE: the status field equals VALUE (for wait_until).
lab_field_is() {
  local v
  v=$(lab_get "$1" 2>/dev/null) || return 1
  [[ $v == "$2" ]]
}
# lab_counter PATH: a numeric status field; fails (rather than assuming 0) when it is absent.
lab_counter() {
  local v
  v=$(lab_get "$1") || return 1
  [[ $v =~ ^[0-9]+$ ]] || { lab_log "$1 is not a counter: '$v'"; return 1; }
  echo "$v"
}
_lab_counter_at_least() { # PATH MIN
  local v
  v=$(lab_get "$1" 2>/dev/null) || return 1
  [[ $v =~ ^[0-9]+$ ]] && ((v >= $2))
}
# assert_counter_ge PATH MIN [TIMEOUT_S]: waits for the counter to reach MIN, else fails showing it.
assert_counter_ge() {
  local path=$1 min=$2 timeout=${3:-10}
  if ! wait_until "$timeout" _lab_counter_at_least "$path" "$min"; then
    local seen
    seen=$(lab_get "$path" 2>&1) || true
    fail "status $path: expected >= $min within ${timeout}s, saw '$seen'"
  fi
  lab_log "ok: status $path = $(lab_get "$path") (>= $min)"
}

_lab_gw_ready() {
  [[ -n $LAB_GW_PID ]] && lab_pid_alive "$LAB_GW_PID" || return 2
  lab_ctl status >/dev/null 2>&1
}

# lab_start_gateway: sluiced in the gateway namespace, stderr to $LAB_GW_LOG; returns when
# `sluicectl status` answers (at most 20 s). LAB_DETACH=1 starts it in its own session (the demo).
lab_start_gateway() {
  [[ -x $SLUICED ]] || fail "sluiced not found at $SLUICED (build first: scripts/setup)"
  [[ -x $SLUICECTL ]] || fail "sluicectl not found at $SLUICECTL"
  [[ -f $LAB_CONFIG ]] || lab_write_config
  lab_log "starting sluiced in $LAB_NS_GW (log $LAB_GW_LOG)"
  echo "=== $(date +%T) sluiced --config $LAB_CONFIG" >>"$LAB_GW_LOG"
  if [[ ${LAB_DETACH:-0} == 1 ]]; then
    setsid ip netns exec "$LAB_NS_GW" "$SLUICED" --config "$LAB_CONFIG" </dev/null >>"$LAB_GW_LOG" 2>&1 &
  else
    ip netns exec "$LAB_NS_GW" "$SLUICED" --config "$LAB_CONFIG" </dev/null >>"$LAB_GW_LOG" 2>&1 &
  fi
  LAB_GW_PID=$!
  lab_track "$LAB_GW_PID" sluiced
  local deadline=$(($(_lab_now_ms) + 20000)) rc
  while true; do
    _lab_gw_ready && rc=0 || rc=$?
    ((rc == 0)) && break
    if ((rc == 2)); then
      tail -n 40 "$LAB_GW_LOG" >&2
      fail "sluiced exited during startup"
    fi
    if (($(_lab_now_ms) >= deadline)); then
      tail -n 40 "$LAB_GW_LOG" >&2
      fail "sluicectl status did not answer within 20 s of starting sluiced"
    fi
    sleep 0.2
  done
  lab_log "sluiced up (pid $LAB_GW_PID)"
}

# Waits (bounded) until something in namespace NS listens on PORT (tcp or udp, default tcp):
# servers started in the background are ready before a test connects to them.
_lab_listening() { ip netns exec "$1" ss -H -ln "-${3:0:1}" "sport = :$2" 2>/dev/null | grep -q .; }
lab_wait_listen() { # NS PORT [tcp|udp]
  wait_until 10 _lab_listening "$1" "$2" "${3:-tcp}" || fail "nothing listens on ${3:-tcp}/$2 in $1"
}

lab_gateway_alive() { [[ -n ${LAB_GW_PID:-} ]] && lab_pid_alive "$LAB_GW_PID"; }

lab_stop_gateway() {
  [[ -n ${LAB_GW_PID:-} ]] || return 0
  lab_log "stopping sluiced (pid $LAB_GW_PID)"
  _lab_kill "$LAB_GW_PID"
  wait "$LAB_GW_PID" 2>/dev/null || true
  LAB_GW_PID=
}

# ---------------------------------------------------------------------------------------------
# wireguard-go clients

# A per-run interface name: wireguard-go's UAPI socket (/var/run/wireguard/NAME.sock) is global.
lab_wg_name() { echo "$LAB_P-w$1"; }

_lab_wg_ready() { lab_pid_alive "$1" && [[ -S /var/run/wireguard/$2.sock ]]; }

# lab_wg_client IFNAME PRIVATE_KEY_FILE VIRTUAL_ADDRESS [option=value ...]
#   ns=NS             namespace (default: the client's)
#   endpoint=H:P|none the gateway's endpoint (default 192.0.2.2:51820); none: wait to be contacted
#   listen_port=N     fixed UDP listen port (default: random)
#   keepalive=N|off   persistent keepalive (default 25)
#   allowed=P[,P...]  allowed-ips of the gateway peer (default 100.64.0.0/10)
#   route=P[,P...]|none  routes through the tunnel (default: the allowed-ips)
#   peer_key=PUB      the gateway's public key (default: from $LAB_DIR/gateway.pub)
lab_wg_client() {
  local ifname=$1 key=$2 vaddr=$3
  shift 3
  local ns=$LAB_NS_CL endpoint=$LAB_GW_WAN_ADDR:$LAB_WG_PORT listen_port="" keepalive=25
  local allowed=$LAB_OVERLAY route="" peer_key="" opt
  for opt in "$@"; do
    case $opt in
      ns=*) ns=${opt#*=} ;;
      endpoint=*) endpoint=${opt#*=} ;;
      listen_port=*) listen_port=${opt#*=} ;;
      keepalive=*) keepalive=${opt#*=} ;;
      allowed=*) allowed=${opt#*=} ;;
      route=*) route=${opt#*=} ;;
      peer_key=*) peer_key=${opt#*=} ;;
      *) fail "lab_wg_client: unknown option $opt" ;;
    esac
  done
  ((${#ifname} <= 15)) || fail "interface name $ifname longer than 15 characters"
  [[ -n $peer_key ]] || peer_key=$(lab_pub gateway)
  local log=$LAB_DIR/$ifname.log
  echo "$ifname" >>"$LAB_DIR/wgifs"
  lab_log "starting wireguard-go $ifname in $ns ($vaddr, endpoint $endpoint)"
  if [[ ${LAB_DETACH:-0} == 1 ]]; then
    LOG_LEVEL=${LAB_WG_LOG_LEVEL:-error} WG_PROCESS_FOREGROUND=1 \
      setsid ip netns exec "$ns" wireguard-go -f "$ifname" </dev/null >>"$log" 2>&1 &
  else
    LOG_LEVEL=${LAB_WG_LOG_LEVEL:-error} WG_PROCESS_FOREGROUND=1 \
      ip netns exec "$ns" wireguard-go -f "$ifname" </dev/null >>"$log" 2>&1 &
  fi
  local pid=$!
  lab_track "$pid" wireguard-go
  echo "$pid" >"$LAB_DIR/$ifname.pid"
  if ! wait_until 10 _lab_wg_ready "$pid" "$ifname"; then
    cat "$log" >&2
    fail "wireguard-go $ifname did not come up"
  fi
  local args=(private-key "$key")
  [[ -n $listen_port ]] && args+=(listen-port "$listen_port")
  args+=(peer "$peer_key" allowed-ips "$allowed")
  [[ $endpoint != none ]] && args+=(endpoint "$endpoint")
  [[ $keepalive != off ]] && args+=(persistent-keepalive "$keepalive")
  ip netns exec "$ns" wg set "$ifname" "${args[@]}"
  ip -n "$ns" addr add "$vaddr/32" dev "$ifname"
  ip -n "$ns" link set "$ifname" up mtu "$LAB_MTU"
  [[ -n $route ]] || route=$allowed
  if [[ $route != none ]]; then
    local prefix
    for prefix in ${route//,/ }; do ip -n "$ns" route add "$prefix" dev "$ifname"; done
  fi
}

lab_wg_stop() { # IFNAME
  local pid
  pid=$(cat "$LAB_DIR/$1.pid" 2>/dev/null) || return 0
  lab_log "stopping wireguard-go $1"
  _lab_kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -f "$LAB_DIR/$1.pid" "/var/run/wireguard/$1.sock"
}

# lab_wg_handshake IFNAME [NS]: unix time of the latest handshake with the first peer (0: none).
lab_wg_handshake() {
  local ts
  ts=$(ip netns exec "${2:-$LAB_NS_CL}" wg show "$1" latest-handshakes 2>/dev/null | awk 'NR == 1 {print $2}')
  echo "${ts:-0}"
}
_lab_wg_has_handshake() { (($(lab_wg_handshake "$@") > 0)); }
lab_wait_wg_handshake() { # IFNAME TIMEOUT_S [NS]
  wait_until "$2" _lab_wg_has_handshake "$1" "${3:-}" ||
    fail "no handshake on $1 within $2 s (wg show $1 latest-handshakes stays 0)"
  lab_log "ok: $1 completed a handshake"
}

# ---------------------------------------------------------------------------------------------
# Traffic

# lab_ping NS DST COUNT INTERVAL [ping options...]: prints "sent received"; never fails by itself.
lab_ping() {
  local ns=$1 dst=$2 count=$3 interval=$4 out sent recv
  shift 4
  local limit
  # Bounded: the ping's own duration plus a generous margin.
  limit=$(python3 -c "import math; print(math.ceil($count * $interval) + 30)")
  out=$(timeout "$limit" ip netns exec "$ns" ping -n -q -c "$count" -i "$interval" -W 2 "$@" "$dst" 2>&1) || true
  sent=$(sed -n 's/^\([0-9]\+\) packets transmitted.*/\1/p' <<<"$out")
  recv=$(sed -n 's/.* \([0-9]\+\) \(packets \)\?received.*/\1/p' <<<"$out")
  echo "${sent:-0} ${recv:-0}"
}

# assert_ping_clean DESCRIPTION NS DST COUNT INTERVAL [ping options...]: every echo answered.
assert_ping_clean() {
  local desc=$1 sent recv
  shift
  read -r sent recv < <(lab_ping "$@")
  [[ $sent == "$3" ]] || fail "$desc: expected $3 echo requests sent, saw $sent (received $recv)"
  [[ $recv == "$3" ]] || fail "$desc: expected $3 of $3 replies (zero loss), saw $recv of $sent"
  lab_log "ok: $desc: $recv/$sent replies"
}

# num_lt A B: A < B for decimal numbers (ages may be fractional).
num_lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }
is_number() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }

# ping_ok NS DST: one echo answered within 1 s (for wait_until).
ping_ok() { ip netns exec "$1" ping -n -q -c 1 -W 1 "$2" >/dev/null 2>&1; }
