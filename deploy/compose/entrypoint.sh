#!/bin/sh
# Entrypoint of the compose image (docker-compose.yml).
#   entrypoint.sh server   kapsel server (control plane + local agent); publishes its join token
#                          in /shared/node-token for the agents
#   entrypoint.sh agent    waits for /shared/node-token, then kapsel agent --server URL --token T
# Both import the demo images (/images/*.tar) into the node's image store first, so pods run
# without a registry. KAPSEL_SERVER_URL (default https://server:6443) is what agents dial.
set -eu
role=${1:-server}
data=/var/lib/kapsel
url=${KAPSEL_SERVER_URL:-https://server:6443}
node=$(hostname)
# a token left from an earlier run of this cluster would still be valid, but publish afresh
[ "$role" = server ] && rm -f /shared/node-token
for img in /images/*.tar; do
  [ -e "$img" ] && kapsel image import --data-dir "$data" "$img"
done
child=
trap '[ -n "$child" ] && kill -TERM "$child"' TERM INT
case $role in
  server)
    kapsel server --data-dir "$data" --listen 0.0.0.0:6443 --advertise-url "$url" \
      --tls-san server --node-name "$node" --write-kubeconfig "$data/server/kubeconfig" &
    child=$!
    while [ ! -s "$data/server/node-token" ]; do
      kill -0 "$child" 2>/dev/null || { wait "$child"; exit $?; }
      sleep 0.2
    done
    cp "$data/server/node-token" /shared/node-token.tmp && mv /shared/node-token.tmp /shared/node-token
    echo "entrypoint: join token published in /shared/node-token"
    ;;
  agent)
    echo "entrypoint: waiting for the server's join token"
    while [ ! -s /shared/node-token ]; do sleep 0.5; done
    kapsel agent --server "$url" --token-file /shared/node-token --data-dir "$data" --node-name "$node" &
    child=$!
    ;;
  *) exec "$@" ;;
esac
# wait returns early when a signal arrives; wait again for the child's own exit
wait "$child" || true
wait "$child"
