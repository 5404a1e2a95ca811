#!/usr/bin/env bash
# The ctr half of README.md as one script, run as root on a host where the shim is installed
# (examples/containerd/walkthrough.sh or its README) and a registry runs at $REGISTRY: push
# examples/http/http.wasm as an HTTP function, pull it into containerd, run it on the host
# network, send it requests, read its access log, stop it with SIGTERM (exit 0) and delete it.
# tests/test_containerd_walkthrough.py runs it against a private containerd and registry.
#
#   WASM_OCI            the wasm-oci command                        (/opt/wasm-oci/bin/wasm-oci)
#   CONTAINERD_ADDRESS  containerd's socket                          (/run/containerd/containerd.sock)
#   CONTAINERD_NAMESPACE                                             (default)
#   REGISTRY            a plain-HTTP registry to push to             (127.0.0.1:5000)
#   HTTP_ADDRESS        where the function listens, IP:PORT          (127.0.0.1:8080)
#   LOG_DIR             where the task's log file goes               (a new temp dir)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
wasm_oci=${WASM_OCI:-/opt/wasm-oci/bin/wasm-oci}
address=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
namespace=${CONTAINERD_NAMESPACE:-default}
registry=${REGISTRY:-127.0.0.1:5000}
listen=${HTTP_ADDRESS:-127.0.0.1:8080}
log_dir=${LOG_DIR:-$(mktemp -d)}
image="$registry/acme/upper:1.0"
id=upper-walkthrough
log="$log_dir/$id.log"
url="http://$listen"

step() { printf '\n== %s\n' "$*"; }
fail() { echo "walkthrough: $*" >&2; exit 1; }
ctr() { timeout 120 ctr --address "$address" --namespace "$namespace" "$@"; }  # timeout runs the binary
status() { ctr task ls | awk -v id="$id" '$1 == id { print $3 }'; }
# On any failure, leave nothing running behind.
cleanup() {
  if [ $? -ne 0 ]; then
    ctr task kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
    ctr task delete --force "$id" >/dev/null 2>&1 || true
    ctr container rm "$id" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

step "push examples/http/http.wasm to $image as an HTTP function (--trigger http)"
timeout 120 "$wasm_oci" push "$here/../http/http.wasm" "$image" --plain-http --trigger http
trigger=$(timeout 120 "$wasm_oci" inspect "$image" --plain-http | grep '^Trigger:')
printf '%s\n' "$trigger"
[[ $trigger =~ ^Trigger:\ +http$ ]] || fail "the image's trigger is not http"

step "pull it into containerd"
ctr images pull --plain-http "$image"

step "run it detached on the host network, listening on $listen, its log in $log"
ctr run -d --runtime io.containerd.wasm-oci.v1 --net-host \
  --env "WASM_OCI_HTTP_ADDRESS=$listen" --env WASM_OCI_HTTP_TIMEOUT=10 \
  --log-uri "file://$log" "$image" "$id"
ctr task ls
[ "$(status)" = RUNNING ] || fail "task $id is $(status), not RUNNING"

step "curl it: the POST body comes back uppercased, method, path and query as X- headers"
body=$(curl -sS --max-time 10 -D "$log_dir/headers" --data 'hello from curl' "$url/greet?lang=en")
cat "$log_dir/headers"
printf '%s\n' "$body"
[ "$body" = "HELLO FROM CURL" ] || fail "expected HELLO FROM CURL, got: $body"
grep -qi '^x-method: POST' "$log_dir/headers" || fail "no X-Method: POST"
grep -qi '^x-path: /greet' "$log_dir/headers" || fail "no X-Path: /greet"
grep -qi '^x-query: lang=en' "$log_dir/headers" || fail "no X-Query: lang=en"
[ "$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$url/")" = 200 ] || fail "GET / did not answer 200"

step "its access log: a line per request, on the task's stdout"
cat "$log"
grep -q '"POST /greet?lang=en HTTP/1.1" 200 15 ' "$log" || fail "no access log line for the POST"

step "its metrics: the guests' CPU time and memory"
ctr task metrics "$id"

step "stop it with SIGTERM: it stops accepting, finishes the requests in flight and exits 0"
ctr task kill --signal SIGTERM "$id"
for _ in $(seq 300); do
  [ "$(status)" = STOPPED ] && break
  sleep 0.1
done
ctr task ls
[ "$(status)" = STOPPED ] || fail "task $id is $(status) 30 s after SIGTERM, not STOPPED"
if curl -s --max-time 2 -o /dev/null "$url/"; then fail "$listen still answers after the stop"; fi
# `ctr task delete` warns of an exit code other than 0 ("exit with non-zero exit code 137").
deleted=$(ctr task delete "$id" 2>&1)
[ -z "$deleted" ] || printf '%s\n' "$deleted"
case $deleted in *"non-zero exit code"*) fail "task $id did not exit 0 after SIGTERM" ;; esac
ctr container rm "$id"
echo "exited with status 0"

step "done: an HTTP function served by containerd with runtime io.containerd.wasm-oci.v1"
