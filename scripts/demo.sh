#!/usr/bin/env bash
# kapsel demo: build, start a single-node cluster on the embedded store, run
# examples/deployment.yaml, show it serving, roll it to v2, and leave it running.
#
#   scripts/demo.sh          run the demo (re-running starts a fresh demo cluster)
#   scripts/demo.sh stop     delete the demo's objects, wait for its pods to stop, stop the server
#
# Needs root on Debian 12 (cgroups, namespaces, overlayfs) and a Rust toolchain (cargo);
# no internet beyond Debian's package mirror: the demo image is built from busybox-static.
# Environment: KAPSEL_DEMO_PROFILE (release|debug), KAPSEL_DEMO_DIR (default /var/lib/kapsel-demo), KAPSEL_DEMO_LISTEN (127.0.0.1:6443).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
data=${KAPSEL_DEMO_DIR:-/var/lib/kapsel-demo}
listen=${KAPSEL_DEMO_LISTEN:-127.0.0.1:6443}
run=/run/kapsel-demo
profile=${KAPSEL_DEMO_PROFILE:-release}   # `debug` skips the (slow) optimised build
case $profile in
  release) build=(cargo build --release -p kapsel-cli) ;;
  debug) build=(cargo build -p kapsel-cli) ;;
  *) echo "demo: KAPSEL_DEMO_PROFILE is release or debug" >&2; exit 1 ;;
esac
kapsel=${CARGO_TARGET_DIR:-$repo/target}/$profile/kapsel
pidfile=$data/server.pid
log=$data/server.log
export KAPSELCONFIG=${KAPSELCONFIG:-$HOME/.kapsel/config}

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

server_pid() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && cat "$pidfile"; }

stop_server() {
  local pid
  pid=$(server_pid) || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { echo "server $pid did not stop in 10 s; killing it"; kill -KILL "$pid"; }
  rm -f "$pidfile"
}

stop() {
  if server_pid >/dev/null; then
    say "deleting the demo's objects and waiting for its pods to stop"
    "$kapsel" delete -f examples/deployment.yaml --ignore-not-found >/dev/null 2>&1 || true
    local left
    for _ in $(seq 1 60); do
      # an error (server busy, binary being rebuilt) is not "no pods left"
      left=$("$kapsel" get pods -l app=web -o name 2>/dev/null) && [ -z "$left" ] && break
      sleep 1
    done
    say "stopping kapsel server (pid $(cat "$pidfile"))"
    stop_server
    if ! pgrep -x kapsel >/dev/null && ! pgrep -x kapsel-agent >/dev/null; then
      say "removing the node's pod network (bridge kapsel0, nftables tables kapsel-podnet and kapsel-svc)"
      nft delete table ip kapsel-svc 2>/dev/null || true
      nft delete table ip kapsel-podnet 2>/dev/null || true
      ip link del kapsel0 2>/dev/null || true
    fi
  fi
  echo "stopped. State is kept in $data (remove it for a fresh start)."
}

[ "${1:-}" = stop ] && { stop; exit 0; }
[ "$(id -u)" = 0 ] || die "run as root (the runtime needs namespaces, cgroups and overlayfs)"

say "installing Debian packages (scripts/install-deps.sh)"
scripts/install-deps.sh
command -v cargo >/dev/null || die "cargo is missing: install a Rust toolchain (rustup or Debian's cargo)"

say "building kapsel (${build[*]})"
"${build[@]}"
t_built=$(date +%s.%N)

say "building the demo images from busybox-static"
mkdir -p "$data/images"
scripts/build-demo-image.sh v1 "$data/images/demo-httpd-v1.tar"
scripts/build-demo-image.sh v2 "$data/images/demo-httpd-v2.tar"

if server_pid >/dev/null; then
  say "a demo cluster is already running: restarting it"
  stop
fi
# every run starts a fresh cluster: the state of an earlier one (possibly written by an older
# kapsel, e.g. a join token from before TLS) is removed; the built images are kept
rm -rf "$data/server" "$data/agent"
say "starting kapsel server (log: $log)"
mkdir -p "$data" "$run"
rm -f "$data/server/url"
setsid "$kapsel" server --data-dir "$data" --listen "$listen" \
  --runtime-dir "$run/runtime" --cgroup-parent kapsel-demo \
  --write-kubeconfig "$KAPSELCONFIG" >"$log" 2>&1 </dev/null &
echo $! >"$pidfile"
for _ in $(seq 1 100); do
  [ -s "$data/server/url" ] && break
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$log"; die "kapsel server exited (see $log)"; }
  sleep 0.1
done
[ -s "$data/server/url" ] || die "kapsel server did not come up in 10 s (see $log)"
echo "API server at $(cat "$data/server/url"), client config in $KAPSELCONFIG"

say "importing the demo images into the node's image store (no registry needed)"
"$kapsel" image import --data-dir "$data" "$data/images/demo-httpd-v1.tar" "$data/images/demo-httpd-v2.tar"

say "waiting for the node to be Ready"
for _ in $(seq 1 60); do
  "$kapsel" get nodes 2>/dev/null | grep -q " Ready" && break
  sleep 0.5
done
"$kapsel" get nodes -o wide

say "kapsel apply -f examples/deployment.yaml"
t_apply=$(date +%s.%N)
"$kapsel" apply -f examples/deployment.yaml
"$kapsel" rollout status deployment/web --timeout 180s
t_ready=$(date +%s.%N)
"$kapsel" get pods -o wide

answer() {
  local ok=0
  for pod in $("$kapsel" get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}'); do
    local uid ns phase deleting
    # one read per pod (a terminating pod may vanish between the list and this get)
    read -r phase uid deleting < <("$kapsel" get pod "$pod" \
      -o jsonpath='{.status.phase}{" "}{.metadata.uid}{" "}{.metadata.deletionTimestamp}' 2>/dev/null || true) || true
    [ "${phase:-}" = Running ] && [ -n "${uid:-}" ] && [ -z "${deleting:-}" ] || continue
    ns=$run/runtime/sandboxes/p-$uid/net
    printf '  %-28s ' "$pod"
    if nsenter --net="$ns" timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 && printf "GET / HTTP/1.0\r\n\r\n" >&3 && cat <&3' 2>/dev/null | sed '1,/^\r\?$/d'; then ok=$((ok+1)); else echo "(no answer)"; fi
  done
  [ "$ok" -gt 0 ] || die "no pod answered"
}
# requests through the Service: its ClusterIP, load-balanced by the nftables service proxy
# (table ip kapsel-svc) over the Ready pods, from this host
through_service() {
  local ip node_port ok=0 body
  ip=$("$kapsel" get service web -o jsonpath='{.spec.clusterIP}')
  node_port=$("$kapsel" get service web -o jsonpath='{.spec.ports[0].nodePort}')
  echo "  Service web: ClusterIP $ip port 80, NodePort $node_port on the node's address"
  for i in $(seq 1 40); do
    body=$(timeout 3 bash -c "exec 3<>/dev/tcp/$ip/80 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null \
      | sed '1,/^\r\?$/d') || true
    if [ -n "$body" ]; then
      printf '  GET http://%s/ -> %s\n' "$ip" "$body"
      ok=$((ok+1))
      [ "$ok" -ge 6 ] && break
    else
      sleep 0.25   # endpoints and proxy rules follow the pods' readiness
    fi
  done
  [ "$ok" -gt 0 ] || die "the Service web did not answer on $ip:80"
}
say "each pod answers on :8080 inside its own network namespace"
answer
say "and the Service answers on its ClusterIP"
through_service

say "rolling to v2: apply the manifest with image demo-httpd:v2 and watch the rollout"
sed -e 's/demo-httpd:v1/demo-httpd:v2/' -e 's/value: v1/value: v2/' examples/deployment.yaml | "$kapsel" apply -f -
"$kapsel" rollout status deployment/web --timeout 180s
"$kapsel" rollout history deployment/web || true
"$kapsel" get pods -o wide
say "after the rollout"
answer
through_service

awk -v a="$t_built" -v b="$t_apply" -v c="$t_ready" -v t="$(elapsed)" 'BEGIN{
  printf "\ntimings: start+import %.1fs, apply -> 3/3 Ready %.1fs, whole demo %ss\n", b-a, c-b, t }'
cat <<MSG

The cluster keeps running (kapsel server pid $(cat "$pidfile"), log $log). Try:
  $kapsel get pods -o wide
  $kapsel rollout undo deployment/web && $kapsel rollout status deployment/web
  $kapsel describe deployment web
Stop it with: scripts/demo.sh stop     (or: kill $(cat "$pidfile"); pods keep running until the demo objects are deleted)
MSG
