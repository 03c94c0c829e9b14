#!/usr/bin/env bash
# OCI runtime CLI benchmark: rcrun vs runc vs crun on a busybox `true`
# container, as whole processes, interleaved (rcrun runc crun rcrun ...):
#   run                      `<rt> run` until the container has exited
#   create / start / delete  the steps of the detached life cycle, and their sum
#   exec                     `<rt> exec` of `true` in a running container (what
#                            a kubelet exec probe costs)
#   peak RSS                 max RSS of the runtime process during `run`
# Medians in milliseconds and ratios rcrun/runc, rcrun/crun.
#
# crun refuses this cgroup-v1 hybrid host (hugetlb on /sys/fs/cgroup/unified),
# so all three run inside one private mount namespace with an empty tmpfs over
# /sys/fs/cgroup/unified; the host's mounts are never changed.
#
# Usage: bench/runtime.sh [iterations]   (default 30)
#   env RCRUN=path (default target/release/rcrun), RUNC, CRUN, RCRUN_FIXTURES;
#   BENCH_STATE=tmpfs keeps every runtime's state root on a tmpfs, as /run is
#   (the default roots /run/rcrun, /run/runc, /run/crun); default: the work
#   directory under /tmp;
#   RCRUN_BASE=path adds another rcrun build (column "base", ratio rcrun/base)
#   to the same interleaved rounds, to measure a change;
#   BENCH_RO_BINARY=1 bind-mounts the rcrun binaries read-only over
#   themselves (in the bench's private mount namespace only), which spares
#   rcrun's re-exec into its read-only image.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-30}"
RCRUN="${RCRUN:-$PWD/target/release/rcrun}"
RUNC="${RUNC:-$(command -v runc || echo /usr/sbin/runc)}"
CRUN="${CRUN:-$(command -v crun || echo /usr/bin/crun)}"
BASE="${RCRUN_BASE:-}"
FIXTURES="${RCRUN_FIXTURES:-$PWD/.fixtures}"

if [ -z "${RCRUN_BENCH_INSIDE:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
  for rt in "$RCRUN" "$RUNC" "$CRUN" ${BASE:+"$BASE"}; do
    [ -x "$rt" ] || { echo "$rt is missing (cargo build --release -p rcrun; apt-get install runc crun)" >&2; exit 1; }
  done
  [ -x /usr/bin/time ] || { echo "/usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
  [ -x "$FIXTURES/rootfs/busybox/bin/busybox" ] || {
    echo "no busybox rootfs in $FIXTURES: cargo run -p rcrun-fixtures -- build" >&2; exit 1; }
  export RCRUN RUNC CRUN BASE FIXTURES BENCH_STATE="${BENCH_STATE:-disk}" RCRUN_BENCH_INSIDE=1
  export BENCH_RO_BINARY="${BENCH_RO_BINARY:-}"
  exec unshare --mount --propagation private "$0" "$N"
fi

# Inside the private mount namespace from here on.
if mountpoint -q /sys/fs/cgroup/unified; then
  mount -t tmpfs -o size=1m rcrun-bench-empty /sys/fs/cgroup/unified
fi
if [ -n "$BENCH_RO_BINARY" ]; then
  for rt in "$RCRUN" ${BASE:+"$BASE"}; do
    mount --bind "$rt" "$rt" && mount -o remount,bind,ro "$rt"
  done
fi

work="$(mktemp -d /tmp/rcrun-runtime-bench.XXXXXX)"
if [ "$BENCH_STATE" = tmpfs ]; then
  # Private mount namespace: the tmpfs goes away with it.
  mount -t tmpfs -o size=64m,mode=700 rcrun-bench-state "$work"
fi
cleanup() {
  for name in "${runtimes[@]}"; do
    rt="$(runtime_path "$name")"
    for id in $("$rt" --root "$work/state-$name" list -q 2>/dev/null || true); do
      "$rt" --root "$work/state-$name" delete --force "$id" >/dev/null 2>&1 || true
    done
  done
  if [ "$BENCH_STATE" = tmpfs ]; then umount "$work" 2>/dev/null || true; fi
  rm -rf "$work"
}
runtime_path() {
  case "$1" in rcrun) echo "$RCRUN" ;; runc) echo "$RUNC" ;; crun) echo "$CRUN" ;; base) echo "$BASE" ;; esac
}
runtimes=(rcrun runc crun)
[ -n "$BASE" ] && runtimes+=(base)
trap cleanup EXIT

bundle="$work/bundle"
mkdir -p "$bundle"
(cd "$bundle" && "$RUNC" spec)
jq --arg root "$FIXTURES/rootfs/busybox" '
    .process.terminal = false
  | .process.args = ["true"]
  | .root = {path: $root, readonly: true}
  | .hostname = "bench"' "$bundle/config.json" >"$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"

# stamp VAR: the time in microseconds into VAR. A builtin assignment, not a
# command substitution: a subshell's fork and exit would fall inside every
# timed interval and add the same milliseconds to each runtime's numbers.
stamp() { local t="$EPOCHREALTIME"; printf -v "$1" '%s' "${t/./}"; }

# step NAME RUNTIME_NAME -- records elapsed microseconds of one command
record() { # file value
  echo "$2" >>"$work/$1"
}

# One long-running container per runtime for `exec`.
exec_bundle="$work/exec-bundle"
mkdir -p "$exec_bundle"
jq '.process.args = ["sleep", "100000"]' "$bundle/config.json" >"$exec_bundle/config.json"
for name in "${runtimes[@]}"; do
  "$(runtime_path "$name")" --root "$work/state-$name" run --detach --bundle "$exec_bundle" "exec-$name-$$" \
    </dev/null >/dev/null 2>&1 || { echo "$name run --detach failed" >&2; exit 1; }
done

one_round() { # runtime name, round index
  local name="$1" i="$2" rt id t0 t1 t2 t3
  rt="$(runtime_path "$name")"
  id="bench-$name-$$-$i"
  local root="$work/state-$name"
  stamp t0
  "$rt" --root "$root" run --bundle "$bundle" "$id" </dev/null >/dev/null 2>&1 \
    || { echo "$name run failed" >&2; "$rt" --root "$root" run --bundle "$bundle" "$id" </dev/null; exit 1; }
  stamp t1
  record "$name.run" $((t1 - t0))
  "$rt" --root "$root" delete --force "$id" >/dev/null 2>&1 || true

  id="$id-c"
  stamp t0
  "$rt" --root "$root" create --bundle "$bundle" "$id" </dev/null >/dev/null 2>&1 \
    || { echo "$name create failed" >&2; exit 1; }
  stamp t1
  "$rt" --root "$root" start "$id" </dev/null >/dev/null 2>&1 || { echo "$name start failed" >&2; exit 1; }
  stamp t2
  # `true` exits at once; wait for that so delete needs no force.
  for _ in $(seq 200); do
    # grep without -q reads to the end: no writer ever sees a closed pipe.
    "$rt" --root "$root" state "$id" 2>/dev/null | grep '"status": *"stopped"' >/dev/null && break
  done
  stamp t3
  "$rt" --root "$root" delete "$id" </dev/null >/dev/null 2>&1 || { echo "$name delete failed" >&2; exit 1; }
  local t4
  stamp t4
  record "$name.create" $((t1 - t0))
  record "$name.start" $((t2 - t1))
  record "$name.delete" $((t4 - t3))
  record "$name.cycle" $((t1 - t0 + t2 - t1 + t4 - t3))

  stamp t0
  "$rt" --root "$root" exec "exec-$name-$$" true </dev/null >/dev/null 2>&1 \
    || { echo "$name exec failed" >&2; exit 1; }
  stamp t1
  record "$name.exec" $((t1 - t0))
}

rss_round() { # runtime name, round index: peak RSS (KiB) of `run`
  local name="$1" i="$2" rt id
  rt="$(runtime_path "$name")"
  id="rss-$name-$$-$i"
  /usr/bin/time -f %M -o "$work/rss.tmp" \
    "$rt" --root "$work/state-$name" run --bundle "$bundle" "$id" </dev/null >/dev/null 2>&1
  cat "$work/rss.tmp" >>"$work/$name.rss"
  "$rt" --root "$work/state-$name" delete --force "$id" >/dev/null 2>&1 || true
}

median() { # file -> median of its numbers
  sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Warm-up: page cache, binaries, cgroup hierarchy.
for name in "${runtimes[@]}"; do one_round "$name" warm; done
rm -f "$work"/*.run "$work"/*.create "$work"/*.start "$work"/*.delete "$work"/*.cycle "$work"/*.exec
for i in $(seq "$N"); do
  for name in "${runtimes[@]}"; do one_round "$name" "$i"; done
done
for i in $(seq 10); do
  for name in "${runtimes[@]}"; do rss_round "$name" "$i"; done
done

ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
mib() { awk -v kib="$1" 'BEGIN { printf "%.1f", kib / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo "busybox true, $N interleaved rounds, medians ($(nproc) CPUs, $(uname -r))"
extra_head=() extra_fmt=""
if [ -n "$BASE" ]; then extra_head=(base rcrun/base); extra_fmt=" %10s %12s"; fi
# shellcheck disable=SC2059
printf "%-22s %10s %10s %10s %12s %12s$extra_fmt\n" "" rcrun runc crun rcrun/runc rcrun/crun "${extra_head[@]}"
row() { # label, a b c [d] already converted, ratios from raw values
  local label="$1"; shift
  # shellcheck disable=SC2059
  printf "%-22s %10s %10s %10s %12s %12s$extra_fmt\n" "$label" "$@"
}
for step in run create start delete cycle exec; do
  a="$(median "$work/rcrun.$step")"; b="$(median "$work/runc.$step")"; c="$(median "$work/crun.$step")"
  extra=()
  if [ -n "$BASE" ]; then d="$(median "$work/base.$step")"; extra=("$(ms "$d")" "$(ratio "$a" "$d")"); fi
  row "$step (ms)" "$(ms "$a")" "$(ms "$b")" "$(ms "$c")" "$(ratio "$a" "$b")" "$(ratio "$a" "$c")" "${extra[@]}"
done
a="$(median "$work/rcrun.rss")"; b="$(median "$work/runc.rss")"; c="$(median "$work/crun.rss")"
extra=()
if [ -n "$BASE" ]; then d="$(median "$work/base.rss")"; extra=("$(mib "$d")" "$(ratio "$a" "$d")"); fi
row "peak RSS run (MiB)" "$(mib "$a")" "$(mib "$b")" "$(mib "$c")" "$(ratio "$a" "$b")" "$(ratio "$a" "$c")" "${extra[@]}"
