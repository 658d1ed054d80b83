#!/usr/bin/env bash
# Build deploy/Dockerfile with a daemonless builder (buildah, chroot isolation, vfs storage; no docker
# daemon, no privileges beyond root in this machine), start the API and a worker from the image, and
# call /healthz and one emulator request on a tiny model.
# Usage (as root, from the repository root): bash deploy/verify-image.sh
#   env: PORT (default 8765); BASE_FROM_DEBIAN=1 builds the `python:3.11-slim-bookworm` base from
#   Debian's own packages (debootstrap) when no container registry is reachable (a local base of that
#   name is then used, never pulled); TORCH_WHEEL=path of a local CPU torch wheel served to the build as
#   its TORCH_INDEX when download.pytorch.org is not reachable (the wheel's dependencies come from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
export STORAGE_DRIVER=vfs
PORT="${PORT:-8765}"
WORK="$(mktemp -d /tmp/scaleot-image.XXXXXX)"
command -v buildah >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah; }

if [ "${BASE_FROM_DEBIAN:-0}" = 1 ] && ! buildah inspect localhost/python:3.11-slim-bookworm >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates,passwd \
    bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
  rm -f "$WORK"/rootfs/usr/lib/python3.11/EXTERNALLY-MANAGED "$WORK"/rootfs/var/cache/apt/archives/*.deb
  ctr=$(buildah from scratch)
  cp -a "$WORK/rootfs/." "$(buildah mount "$ctr")/"
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 "$ctr"
  buildah commit -q "$ctr" localhost/python:3.11-slim-bookworm >/dev/null
  buildah rm "$ctr" >/dev/null
fi

args=(--isolation chroot --format docker -f deploy/Dockerfile -t localhost/scaleot:cpu)
if [ "${BASE_FROM_DEBIAN:-0}" = 1 ]; then args+=(--pull-never); fi
if [ -n "${TORCH_WHEEL:-}" ]; then
  mkdir -p "$WORK/torch-index/torch"
  printf '<a href="file:///opt/torch-wheel/%s">%s</a>\n' "$(basename "$TORCH_WHEEL")" "$(basename "$TORCH_WHEEL")" \
    >"$WORK/torch-index/torch/index.html"
  args+=(-v "$(dirname "$TORCH_WHEEL"):/opt/torch-wheel:ro" -v "$WORK/torch-index:/opt/torch-index:ro"
         --build-arg TORCH_INDEX=file:///opt/torch-index)
  printf '[global]\nextra-index-url = https://pypi.org/simple\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$WORK/pip.conf"
  args+=(-v "$WORK/pip.conf:/etc/pip.conf:ro")
fi
# the host's CA bundle, so that a TLS-intercepting proxy trusted here is trusted by pip in the build
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  args+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
start=$(date +%s)
buildah bud "${args[@]}" . >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log"; exit 1; }
echo "image built in $(( $(date +%s) - start )) s: $(buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' localhost/scaleot:cpu)"

mkdir -p "$WORK/data" && chown 10001 "$WORK/data"
ADMIN="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
env_args=(--env "SCALEOT_ADMIN_KEY=$ADMIN" --env 'SCALEOT_MODELS=["tiny-llama","tiny-qwen3"]' -v "$WORK/data:/var/lib/scaleot")
api=$(buildah from localhost/scaleot:cpu)
worker=$(buildah from localhost/scaleot:cpu)
buildah run --isolation chroot "${env_args[@]}" "$api" -- \
  scaleot-server serve --host 127.0.0.1 --port "$PORT" --workers 0 >"$WORK/api.log" 2>&1 &
buildah run --isolation chroot "${env_args[@]}" "$worker" -- scaleot-server worker >"$WORK/worker.log" 2>&1 &
trap 'kill %1 %2 2>/dev/null; wait; buildah rm "$api" "$worker" >/dev/null' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/healthz" >"$WORK/healthz.json" && break; sleep 1; done
echo "GET /healthz: $(cat "$WORK/healthz.json")"
KEY=$(buildah run --isolation chroot "${env_args[@]}" "$api" -- scaleot-server keys create --owner image-check | tail -n 1 | awk '{print $NF}')
id=$(curl -sf -X POST "http://127.0.0.1:$PORT/v1/emulators" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"base_model":"tiny-llama","method":"uniform","alpha":0.5,"beta":0.5,"adapter_bottom":1,"adapter_top":1}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 1 120); do
  state=$(curl -sf "http://127.0.0.1:$PORT/v1/emulators/$id" -H "Authorization: Bearer $KEY" |
          python3 -c 'import json, sys; s = json.load(sys.stdin)["status"]; print(s["state"], s["message"])')
  case "$state" in succeeded*|failed*|cancelled*) break ;; esac
  sleep 2
done
echo "POST /v1/emulators (tiny-llama, uniform): $id $state"
curl -sf -o /dev/null -w "GET /v1/emulators/$id/files/emulator.safetensors: HTTP %{http_code}, %{size_download} bytes\n" \
  "http://127.0.0.1:$PORT/v1/emulators/$id/files/emulator.safetensors" -H "Authorization: Bearer $KEY"
case "$state" in succeeded*) ;; *) exit 1 ;; esac
