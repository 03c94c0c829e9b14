#!/usr/bin/env bash
# Runs the CRI conformance suite (critest from kubernetes-sigs/cri-tools)
# against rcrun-cri, offline:
#   CRITEST=/path/to/critest bash tests/conformance/run.sh [extra critest flags]
# It builds the workspace and the fixture images, starts a private
# docker-registry on 127.0.0.1, pushes the images critest pulls under their
# upstream repository paths, starts rcrun-cri with registry mirrors that send
# registry.k8s.io, k8s.gcr.io, gcr.io and docker.io to that registry (the
# images keep their original names), a bridge+portmap CNI network, and runs
# critest. Everything it started is stopped by PID at the end.
# Prints "N passed, N failed, N skipped"; the full report goes to
# ${REPORT_DIR:-target/conformance}. RUNTIME=/usr/sbin/runc (or crun) runs
# the same suite with that OCI runtime as the default handler.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

if [ -z "${CRITEST:-}" ]; then
  echo "CRITEST is not set: give the path of a critest binary (built from cri-tools) to run the conformance suite."
  exit 0
fi
[ -x "$CRITEST" ] || { echo "CRITEST=$CRITEST is not an executable file" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

report_dir=${REPORT_DIR:-$root/target/conformance}
fixtures=${RCRUN_FIXTURES:-$root/.fixtures}
profile=${PROFILE:-debug}
mkdir -p "$report_dir"
# Short: unix socket paths under it (pod dirs are named by 64-char IDs) must fit in 108 bytes.
work=$(mktemp -d /tmp/rcc.XXXX)
registry_pid=""
daemon_pid=""

cleanup() {
  set +e
  if [ -n "$daemon_pid" ]; then
    kill -TERM "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
  fi
  # Containers outlive the daemon by design: remove what critest left behind
  # with the runtime itself, then the pinned namespaces and mounts.
  if [ -d "$work/run/runtime" ]; then
    for r in "$work"/run/runtime/*; do
      [ -d "$r" ] || continue
      for id in $("$root/target/$profile/rcrun" --root "$r" list -q 2>/dev/null); do
        "$root/target/$profile/rcrun" --root "$r" delete --force "$id" >/dev/null 2>&1
      done
    done
  fi
  for pid in $(cat "$work"/run/*/*/monitor.pid "$work"/run/*/*/*/monitor.pid 2>/dev/null); do
    kill -KILL "$pid" 2>/dev/null
  done
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  if [ -n "$registry_pid" ]; then
    kill -TERM "$registry_pid" 2>/dev/null
    wait "$registry_pid" 2>/dev/null
  fi
  ip link del rcrun-ct0 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

bash tests/setup-host.sh
if [ "$profile" = release ]; then cargo build -q --release --workspace --bins; else cargo build -q --workspace --bins; fi
bin=$root/target/$profile
"$bin/rcrun-fixtures" build --out "$fixtures"

# The registry: plain http on a free loopback port, storage in the work dir.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
"$bin/rcrun-fixtures" push --out "$fixtures" --registry "127.0.0.1:$port" >/dev/null

# CNI: a bridge with a /16 of the project's own, host-local IPs, portmap for
# hostPort (critest maps 12000-12003 on the host).
mkdir -p "$work/cni/net.d" "$work/cni/ipam"
cat > "$work/cni/net.d/10-rcrun-conformance.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "rcrun-conformance",
  "plugins": [
    {"type": "bridge", "bridge": "rcrun-ct0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$work/cni/ipam",
              "ranges": [[{"subnet": "10.231.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON

cat > "$work/cri.toml" <<TOML
socket = "$work/cri.sock"
state_dir = "$work/state"
run_dir = "$work/run"
default_runtime = "rcrun"
monitor_path = "$bin/rcrun-monitor"

[runtimes.rcrun]
path = "${RUNTIME:-$bin/rcrun}"

[cni]
conf_dirs = ["$work/cni/net.d"]
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]

[registry]
insecure = ["127.0.0.1:$port"]
# Offline: the original registries are never tried after the mirror.
mirror_only = ["*"]

[registry.mirrors]
"registry.k8s.io" = ["http://127.0.0.1:$port"]
"k8s.gcr.io" = ["http://127.0.0.1:$port"]
"gcr.io" = ["http://127.0.0.1:$port"]
"docker.io" = ["http://127.0.0.1:$port"]
TOML
"$bin/rcrun-cri" --config "$work/cri.toml" >"$report_dir/rcrun-cri.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$work/cri.sock" ] && break; sleep 0.1; done
[ -S "$work/cri.sock" ] || { echo "rcrun-cri did not start; see $report_dir/rcrun-cri.log" >&2; exit 1; }

# Specs this machine makes impossible, each with its reason:
skips=(
  # The kernel has no AppArmor.
  "AppArmor"
  # The pinned digest names upstream's manifest bytes; no offline image can have it.
  "public image with digest"
)
skip_re=$(IFS='|'; echo "${skips[*]}")

set +e
"$CRITEST" \
  --runtime-endpoint "unix://$work/cri.sock" \
  --image-endpoint "unix://$work/cri.sock" \
  --ginkgo.skip "$skip_re" \
  --ginkgo.no-color \
  --ginkgo.json-report "$report_dir/critest.json" \
  --ginkgo.junit-report "$report_dir/critest.xml" \
  "$@" 2>&1 | tee "$report_dir/critest.log"
status=${PIPESTATUS[0]}
set -e

summary=$(grep -E "^Ran [0-9]+ of [0-9]+ Specs" -A2 "$report_dir/critest.log" | grep -oE "[0-9]+ Passed \| [0-9]+ Failed \| [0-9]+ Pending \| [0-9]+ Skipped" | tail -1)
passed=$(echo "$summary" | grep -oE "^[0-9]+")
failed=$(echo "$summary" | grep -oE "[0-9]+ Failed" | grep -oE "[0-9]+")
ran_line=$(grep -oE "^Ran [0-9]+ of [0-9]+ Specs" "$report_dir/critest.log" | tail -1)
ran=$(echo "$ran_line" | awk '{print $2}'); total=$(echo "$ran_line" | awk '{print $4}')
skipped=$((total - ran))
echo "critest $("$CRITEST" --version 2>/dev/null | head -1): ${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped (report: $report_dir)"
exit "$status"
