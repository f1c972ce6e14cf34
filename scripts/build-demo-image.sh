#!/usr/bin/env bash
# Build the demo image kapsel.local/demo-httpd:VERSION from Debian's busybox-static, offline:
# umoci builds an OCI layout, skopeo writes a docker-archive tar that `kapsel image import`
# (or `skopeo copy … docker://` into a local registry) takes.
#
#   scripts/build-demo-image.sh v1 /tmp/demo-httpd-v1.tar
#
# The image: busybox with every applet linked, /www/index.html saying the version,
# Cmd /bin/httpd -f -p 8080 -h /www. Needs root (umoci unpack keeps ownership), umoci, skopeo.
set -euo pipefail
version=${1:?usage: build-demo-image.sh VERSION OUT.tar [NAME]}
out=${2:?usage: build-demo-image.sh VERSION OUT.tar [NAME]}
name=${3:-kapsel.local/demo-httpd:$version}
for t in umoci skopeo busybox; do
  command -v "$t" >/dev/null || { echo "build-demo-image: $t is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
bb=$(command -v busybox)
if ! file -L "$bb" 2>/dev/null | grep -q static && ! ldd "$bb" 2>&1 | grep -q "not a dynamic"; then
  echo "build-demo-image: $bb is not static (install busybox-static)" >&2; exit 1
fi
work=$(mktemp -d /tmp/kapsel-demo-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:$version" >/dev/null
umoci unpack --image "$work/oci:$version" "$work/bundle" >/dev/null
root="$work/bundle/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,www}
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list-full); do
  [ -e "$root/$applet" ] || ln "$root/bin/busybox" "$root/$applet"
done
# the demo manifest runs /bin/httpd; Debian lists httpd under /usr/sbin
[ -e "$root/bin/httpd" ] || ln "$root/bin/busybox" "$root/bin/httpd"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
cat >"$root/www/index.html" <<HTML
<h1>hello from kapsel demo-httpd $version</h1>
HTML
echo "$version" >"$root/www/version"
umoci repack --image "$work/oci:$version" "$work/bundle" >/dev/null
umoci config --image "$work/oci:$version" \
  --config.cmd=/bin/httpd --config.cmd=-f --config.cmd=-p --config.cmd=8080 --config.cmd=-h --config.cmd=/www \
  --config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.exposedports=8080/tcp >/dev/null
rm -f "$out"
skopeo copy -q "oci:$work/oci:$version" "docker-archive:$out:$name"
echo "built $name -> $out"
