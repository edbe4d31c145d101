#!/usr/bin/env bash
# Two push-server nodes on one Redis: subscribe on one, publish on the other.
#
#   bash examples/two_nodes.sh
#
# Needs redis-server (`apt-get install -y redis-server`). Starts a Redis with
# persistence off on port 6390, nodes on 8081 and 8082, and stops them all
# at the end. See docs/scaling.md.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null || { echo "install Redis: apt-get install -y redis-server" >&2; exit 1; }
cargo build --release -q -p push-server
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

redis-server --port 6390 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
until redis-cli -p 6390 ping >/dev/null 2>&1; do sleep 0.05; done

for port in 8081 8082; do
    target/release/push-server --listen "127.0.0.1:$port" --redis-url redis://127.0.0.1:6390/ \
        >"$work/node-$port.out" 2>"$work/node-$port.log" &
    pids+=($!)
done
until grep -q listening "$work/node-8081.out" 2>/dev/null && grep -q listening "$work/node-8082.out" 2>/dev/null; do
    sleep 0.05
done
echo "nodes: http://127.0.0.1:8081 and http://127.0.0.1:8082, on redis://127.0.0.1:6390"

# A subscriber on node B (SSE), and a poller's starting cursor on node A.
curl -sN localhost:8082/sse/news >"$work/sse.txt" &
pids+=($!)
until grep -q retry "$work/sse.txt" 2>/dev/null; do sleep 0.05; done

for text in "hello from node A" "and again"; do
    echo "publish on A: $(curl -s -d "$text" localhost:8081/pub/news)"
done
echo "publish on B: $(curl -s -d "hello from node B" localhost:8082/pub/news)"

until [ "$(grep -c '^data:' "$work/sse.txt")" -ge 3 ]; do sleep 0.05; done
echo
echo "what the event stream on node B received:"
grep -E '^(id|data):' "$work/sse.txt"
echo
echo "everything, read from node A:"
curl -s 'localhost:8081/poll/news?since=earliest'
echo
