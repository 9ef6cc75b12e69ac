#!/bin/sh
# Multi-host test bed for people (root): N network namespaces ("hosts") on a bridge that lives
# in its own namespace, each with an address on 10.77.0.0/24 (host i = 10.77.0.(i+1)) through a
# veth pair. Nothing is added to the root namespace. The Rust library conformance::hosts does
# the same for tests (plus a user-space relay for latency and loss).
#
#   scripts/hosts.sh up NAME N          make hosts NAME-h0 .. NAME-h(N-1) and NAME-br
#   scripts/hosts.sh exec NAME I CMD..  run CMD inside host I
#   scripts/hosts.sh cut NAME I         detach host I's port from the bridge (no FIN, silent)
#   scripts/hosts.sh restore NAME I     attach it again
#   scripts/hosts.sh down NAME          kill what runs inside and delete every namespace
#   scripts/hosts.sh list               the test bed namespaces present
#
# Example: fake-mongrel2 on host 0, a gateway on host 1, a request from host 2:
#   scripts/hosts.sh up demo 3
#   scripts/hosts.sh exec demo 0 target/debug/fake-mongrel2 --listen 10.77.0.1:8080 \
#       --send tcp://10.77.0.1:9997 --recv tcp://10.77.0.1:9996 &
#   scripts/hosts.sh exec demo 1 target/debug/wsgid --no-daemon --app-path fixtures/apps \
#       --wsgi-app hello:app --recv tcp://10.77.0.1:9997 --send tcp://10.77.0.1:9996 &
#   scripts/hosts.sh exec demo 2 curl -s http://10.77.0.1:8080/
#   scripts/hosts.sh down demo
set -eu

PREFIX=wsgidsh-

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 1 ] || usage
cmd=$1; shift
[ "$(id -u)" = 0 ] || { echo "hosts.sh: network namespaces need root" >&2; exit 1; }
command -v ip >/dev/null || { echo "hosts.sh: needs ip (iproute2)" >&2; exit 1; }

case $cmd in
up)
    [ $# = 2 ] || usage
    name=$PREFIX$1; n=$2; br=$name-br
    ip netns add "$br"
    ip -n "$br" link set lo up
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    i=0
    while [ "$i" -lt "$n" ]; do
        h=$name-h$i
        ip netns add "$h"
        ip -n "$br" link add "p$i" type veth peer name eth0 netns "$h"
        ip -n "$br" link set "p$i" master br0
        ip -n "$br" link set "p$i" up
        ip -n "$h" link set lo up
        ip -n "$h" addr add "10.77.0.$((i + 1))/24" dev eth0
        ip -n "$h" link set eth0 up
        echo "$h 10.77.0.$((i + 1))"
        i=$((i + 1))
    done
    ;;
exec)
    [ $# -ge 3 ] || usage
    h=$PREFIX$1-h$2; shift 2
    exec ip netns exec "$h" "$@"
    ;;
cut)
    [ $# = 2 ] || usage
    ip -n "$PREFIX$1-br" link set "p$2" nomaster
    ;;
restore)
    [ $# = 2 ] || usage
    ip -n "$PREFIX$1-br" link set "p$2" master br0
    ;;
down)
    [ $# = 1 ] || usage
    for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX$1-" || true); do
        for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns"
    done
    ;;
list)
    ip netns list | grep -E "^($PREFIX|wsgidhosts-)" || true
    ;;
*) usage ;;
esac
