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
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# docker-registry's Debian service would listen on :5000; tests start their own on loopback.
systemctl disable --now docker-registry >/dev/null 2>&1 || true

# Python tools some tests drive (one virtualenv, /opt/kapsel-venv). Each test suite adds what it
# needs to pip_pkgs; PyPI is reachable from CI.
VENV=/opt/kapsel-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip_pkgs=(
)
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check "${pip_pkgs[@]}"
fi
