#!/usr/bin/env bash
# An OCI runtime wrapper for the compose test's private dockerd (tests/tests/compose.rs), used
# only when this machine's capability bounding set lacks some capabilities (the dev VM runs the
# tests inside a sandbox without CAP_SYS_RESOURCE). Docker gives a privileged container every
# capability the kernel knows, and runc then fails with "unable to apply caps: operation not
# permitted". On `create` (the bundle's config.json) and `exec` (the --process file), this
# removes the capabilities that are not in our own bounding set (they could not be granted
# anyway), then runs runc.
set -euo pipefail
names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
  LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE
  SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
  SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
  WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
bundle=
process=
create=0
prev=
for a in "$@"; do
  case $a in
    create) create=1 ;;
    --bundle=*) bundle=${a#--bundle=} ;;
    --process=*) process=${a#--process=} ;;
  esac
  case $prev in
    --bundle|-b) bundle=$a ;;
    --process|-p) process=$a ;;
  esac
  prev=$a
done
file=
[ "$create" = 1 ] && [ -n "$bundle" ] && file=$bundle/config.json
[ -n "$process" ] && file=$process
if [ -n "$file" ] && [ -f "$file" ]; then
  bnd=$((16#$(awk '/^CapBnd:/{print $2}' /proc/self/status)))
  drop=()
  for i in "${!names[@]}"; do
    (( (bnd >> i) & 1 )) || drop+=("\"CAP_${names[$i]}\"")
  done
  if [ ${#drop[@]} -gt 0 ]; then
    list=$(IFS=,; echo "[${drop[*]}]")
    # config.json has .process.capabilities, an exec's process.json has .capabilities
    jq --argjson drop "$list" '
      def strip: with_entries(.value |= map(select(. as $c | $drop | index($c) | not)));
      if .process.capabilities then .process.capabilities |= strip
      elif .capabilities then .capabilities |= strip
      else . end' "$file" >"$file.kt" && mv "$file.kt" "$file"
  fi
fi
exec runc "$@"
