#!/usr/bin/env bash
# Every example configuration in config/examples/ passes `sluiced --check` and validates against
# config/gateway.schema.json (JSON Schema 2020-12); the schema itself is a valid 2020-12 schema and rejects
# an unknown key, a bad enum value and a value out of range, and sluiced rejects the same files.
# Needs python3 with the yaml and jsonschema modules (Debian: python3-yaml python3-jsonschema); exits 77
# (skipped) without them. No root needed.
#   SLUICED=build/sluiced tests/config/check_examples.sh
set -euo pipefail

root=${LAB_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
sluiced=${SLUICED:-$root/build/sluiced}
schema=$root/config/gateway.schema.json
examples=$root/config/examples

[[ -x $sluiced ]] || { echo "check_examples: no sluiced at $sluiced (set SLUICED)" >&2; exit 1; }

# Debian's python first: a pyenv or venv python may lack the modules.
python=
for p in /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null && "$p" -c 'import yaml, jsonschema' 2>/dev/null; then
    python=$p
    break
  fi
done
if [[ -z $python ]]; then
  echo "check_examples: SKIP: no python3 with the yaml and jsonschema modules (apt-get install python3-yaml python3-jsonschema)"
  exit 77
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# validate FILE...: prints "FILE: ok" or one "FILE: PATH: message" line per schema error; exit 1 on any.
validate() {
  "$python" - "$schema" "$@" <<'PY'
import json, sys
import yaml
from jsonschema import Draft202012Validator

with open(sys.argv[1]) as f:
    schema = json.load(f)
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema)
bad = False
for path in sys.argv[2:]:
    with open(path) as f:
        doc = yaml.safe_load(f)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    for e in errors:
        where = ".".join(str(p) for p in e.absolute_path) or "(top)"
        print(f"{path}: {where}: {e.message}")
    if not errors:
        print(f"{path}: ok")
    bad = bad or bool(errors)
sys.exit(1 if bad else 0)
PY
}

# The key files an example names (gateway.private_key_file, peers[].preshared_key_file), created next to
# the copy with fresh random keys: --check reads and checks them.
make_keys() {
  "$python" - "$1" <<'PY'
import base64, os, sys
import yaml

path = sys.argv[1]
with open(path) as f:
    doc = yaml.safe_load(f) or {}
files = [(doc.get("gateway") or {}).get("private_key_file")]
files += [p.get("preshared_key_file") for p in (doc.get("peers") or [])]
for name in filter(None, files):
    target = name if os.path.isabs(name) else os.path.join(os.path.dirname(path), name)
    if os.path.isabs(name):
        sys.exit(f"{path}: example names an absolute key file {name}; keep examples self-contained")
    with open(target, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    os.chmod(target, 0o600)
PY
}

shopt -s nullglob
files=("$examples"/*.yaml)
((${#files[@]} > 0)) || { echo "check_examples: no examples in $examples" >&2; exit 1; }

for src in "${files[@]}"; do
  name=$(basename "$src")
  # shellcheck disable=SC2016 # $schema is literal text
  head -n 1 "$src" | grep -qx '# yaml-language-server: $schema=../gateway.schema.json' ||
    fail "$name: the first line should point editors at the schema (# yaml-language-server: \$schema=../gateway.schema.json)"
  dir=$work/${name%.yaml}
  mkdir -p "$dir"
  cp "$src" "$dir/$name"
  make_keys "$dir/$name" || { fail "$name: cannot create its key files"; continue; }
  if out=$("$sluiced" --check --config "$dir/$name" 2>&1); then
    echo "$name: sluiced --check: ok"
  else
    fail "$name: sluiced --check refused it:"$'\n'"$out"
  fi
  if out=$(validate "$dir/$name" 2>&1); then
    echo "$name: schema: ok"
  else
    fail "$name: schema refused it:"$'\n'"$out"
  fi
done

# Every key sluiced knows (tests/config/every-key.yaml), through both.
mkdir -p "$work/every-key"
cp "$root/tests/config/every-key.yaml" "$work/every-key/"
make_keys "$work/every-key/every-key.yaml"
out=$("$sluiced" --check --config "$work/every-key/every-key.yaml" 2>&1) || fail "every-key.yaml: sluiced --check refused it:"$'\n'"$out"
out=$(validate "$work/every-key/every-key.yaml" 2>&1) || fail "every-key.yaml: schema refused it:"$'\n'"$out"

# The keys the loader knows (the lists its config.cpp gives each section) are the keys the schema
# describes and the keys every-key.yaml uses: a key added to one and not the others fails here.
if out=$("$python" - "$root/controlplane/config/config.cpp" "$schema" "$root/tests/config/every-key.yaml" <<'PY'
import json, re, sys
import yaml

source, schema_path, every_path = sys.argv[1:]
text = open(source).read()
loader = set()
for lst in re.findall(r"Section\s+\w+\(d_,[^{;]*\{([^}]*)\}\)", text):
    loader.update(re.findall(r'"([A-Za-z_]+)"', lst))
# The firewall rules' address list is named by the caller: firewall_rules(g, "inbound", "sources", ...).
loader.update(re.findall(r'firewall_rules\(g, "\w+", "(\w+)"', text))
if len(loader) < 40:
    sys.exit(f"found only {len(loader)} keys in {source}: has the loader's layout changed?")

def schema_keys(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "properties" and isinstance(v, dict):
                out.update(v.keys())
            schema_keys(v, out)
    elif isinstance(node, list):
        for v in node:
            schema_keys(v, out)
    return out

def doc_keys(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            out.add(k)
            if k != "attributes" or not isinstance(v, dict):
                doc_keys(v, out)
    elif isinstance(node, list):
        for v in node:
            doc_keys(v, out)
    return out

described = schema_keys(json.load(open(schema_path)), set())
used = doc_keys(yaml.safe_load(open(every_path)), set())
problems = []
for what, keys in (("the schema", described), ("every-key.yaml", used)):
    if loader - keys:
        problems.append(f"keys the loader knows but {what} lacks: {sorted(loader - keys)}")
    if keys - loader:
        problems.append(f"keys in {what} the loader does not know: {sorted(keys - loader)}")
print("\n".join(problems) or f"{len(loader)} keys: loader, schema and every-key.yaml agree")
sys.exit(1 if problems else 0)
PY
); then
  echo "$out"
else
  fail "$out"
fi

# Negative cases, each a small edit of minimal.yaml that both the schema and sluiced must refuse.
base=$work/negative
mkdir -p "$base"
cp "$examples/minimal.yaml" "$base/minimal.yaml"
make_keys "$base/minimal.yaml"
negative() {
  local label=$1 expect=$2 edit=$3 file=$base/$1.yaml
  "$python" - "$base/minimal.yaml" "$file" "$edit" <<'PY'
import sys
import yaml
src, dst, edit = sys.argv[1:]
with open(src) as f:
    doc = yaml.safe_load(f)
exec(edit, {"doc": doc})
with open(dst, "w") as f:
    yaml.safe_dump(doc, f, sort_keys=False)
PY
  local out
  if out=$(validate "$file" 2>&1); then
    fail "$label: the schema accepted it"
  elif ! grep -q -- "$expect" <<<"$out"; then
    fail "$label: the schema refused it without saying '$expect':"$'\n'"$out"
  else
    echo "$label: schema refuses: $(grep -m1 -- "$expect" <<<"$out" | sed "s|$base/||")"
  fi
  if out=$("$sluiced" --check --config "$file" 2>&1); then
    fail "$label: sluiced --check accepted it"
  else
    echo "$label: sluiced --check refuses: $(head -n 1 <<<"$out" | sed "s|$base/||")"
  fi
}
negative unknown-top-level-key "'listen' was unexpected" 'doc["listen"] = 51820'
negative unknown-gateway-key "'listen_prot' was unexpected" 'doc["gateway"]["listen_prot"] = 51820'
negative unknown-acl-key "'port' was unexpected" \
  'doc["policies"][0]["acl"] = [{"action": "deny", "protocol": "tcp", "port": 22}]'
negative bad-enum "is not one of" 'doc["dataplane"]["ports"][1]["role"] = "downlink"'
negative out-of-range "is greater than the maximum" 'doc["gateway"]["mtu"] = 9001'
negative ports-without-protocol "is not one of" \
  'doc["policies"][0]["acl"] = [{"action": "allow", "protocol": "icmp", "ports": [22]}]'
negative no-underlay-port "does not contain" 'doc["dataplane"]["ports"][0]["role"] = "lan"'
negative missing-private-key "'private_key_file' is a required property" 'del doc["gateway"]["private_key_file"]'

if ((failures)); then
  echo "check_examples: $failures failure(s)" >&2
  exit 1
fi
echo "check_examples: ${#files[@]} examples and 8 refusals as expected"
