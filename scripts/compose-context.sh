#!/usr/bin/env bash
# Assemble the docker build context for docker-compose.yml (an image FROM scratch, nothing to
# pull): the workspace's `kapsel` binary, the tools its agent runs (ip, tc, nft, nsenter), the
# shared libraries they need (collected with ldd), a static busybox for the entrypoint's shell,
# and the demo images (scripts/build-demo-image.sh) that the entrypoint imports into each
# node's image store, so pods run without a registry or internet.
#
#   scripts/compose-context.sh [release|debug]     (default release; KAPSEL_COMPOSE_PROFILE)
#   KAPSEL_COMPOSE_BUILD=0 skips the cargo build and takes target/PROFILE/kapsel as it is.
#
# Output: target/compose/ (Dockerfile, rootfs/). Then: docker-compose build && docker-compose up -d
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-${KAPSEL_COMPOSE_PROFILE:-release}}
case $profile in
  release) build=(cargo build -q --release -p kapsel-cli) ;;
  debug) build=(cargo build -q -p kapsel-cli) ;;
  *) echo "compose-context: profile is release or debug" >&2; exit 1 ;;
esac
# KAPSEL_COMPOSE_BUILD=0: use target/PROFILE/kapsel as it is (the tests build it themselves)
[ "${KAPSEL_COMPOSE_BUILD:-1}" = 0 ] || "${build[@]}"
[ -x "target/$profile/kapsel" ] || { echo "compose-context: target/$profile/kapsel is missing" >&2; exit 1; }
out=target/compose
root=$out/rootfs
rm -rf "$root"
mkdir -p "$root"/{bin,usr/local/bin,etc,tmp,images,var/lib/kapsel,run,proc,sys,dev}
chmod 1777 "$root/tmp"

copy() { # copy a file to the same path under the rootfs, following symlinks
  local src=$1 dst=${2:-$1}
  mkdir -p "$root$(dirname "$dst")"
  cp -L "$src" "$root$dst"
}
libs() { # the shared libraries (and the loader) of an ELF binary
  ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^\s*\/.*ld-linux/{print $1}'
}

# kapsel itself, without its debug info (the debug build's is ~100 MB)
objcopy --strip-debug "target/$profile/kapsel" "$root/usr/local/bin/kapsel"
bins=(/usr/sbin/ip /usr/sbin/tc /usr/sbin/nft /usr/bin/nsenter)
for b in "${bins[@]}"; do
  command -v "$b" >/dev/null || { echo "compose-context: $b missing (scripts/install-deps.sh)" >&2; exit 1; }
  copy "$b" "/bin/$(basename "$b")"
done
for l in $( { libs "target/$profile/kapsel"; for b in "${bins[@]}"; do libs "$b"; done; } | sort -u); do
  copy "$l"
done
# the loader where the binaries look for it
[ -e "$root/lib64/ld-linux-x86-64.so.2" ] || copy /lib64/ld-linux-x86-64.so.2

bb=$(command -v busybox)
cp -L "$bb" "$root/bin/busybox"
for applet in sh cat sleep ls mkdir test echo wc grep awk hostname ps kill; do
  ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
cp deploy/compose/entrypoint.sh "$root/usr/local/bin/entrypoint.sh"
chmod 755 "$root/usr/local/bin/entrypoint.sh"

# demo images, rebuilt only when missing (they depend on busybox-static alone)
for v in v1 v2; do
  img=$out/demo-httpd-$v.tar
  [ -s "$img" ] || scripts/build-demo-image.sh "$v" "$img" >/dev/null
  cp "$img" "$root/images/"
done
cp deploy/compose/Dockerfile "$out/Dockerfile"
echo "compose-context: $out ready ($(du -sh "$root" | cut -f1), kapsel from target/$profile)"
