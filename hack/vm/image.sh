#!/usr/bin/env bash
# Builds (once) the VM test lane's guest: a Debian 12 root filesystem with systemd as PID 1 and the
# unified cgroup v2 hierarchy (Debian's default), the cloud kernel, runc, the CNI plugins,
# iptables, and AppArmor's tools with sudo (critest's AppArmor specs load their profiles through
# them), made from Debian packages by debootstrap, as an ext4 image with its kernel and initrd
# beside it. The result is cached in $BERTH_VM_DIR (default /var/cache/berth-vm) and rebuilt only
# when this script changes. Prints the directory. Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."

VM_DIR=${BERTH_VM_DIR:-/var/cache/berth-vm}
MIRROR=${BERTH_VM_MIRROR:-$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd-sysv,dbus,linux-image-cloud-amd64,runc,containernetworking-plugins,iptables,iproute2,procps,kmod,ca-certificates,apparmor,sudo
stamp=$( { cat "$0"; echo "$PACKAGES"; } | sha256sum | cut -c1-16)

if [ -f "$VM_DIR/stamp" ] && [ "$(cat "$VM_DIR/stamp")" = "$stamp" ] \
   && [ -f "$VM_DIR/rootfs.ext4" ] && [ -f "$VM_DIR/vmlinuz" ] && [ -f "$VM_DIR/initrd.img" ]; then
  echo "$VM_DIR"
  exit 0
fi

for tool in debootstrap mke2fs qemu-system-x86_64; do
  command -v "$tool" >/dev/null || { echo "vm/image.sh: $tool is missing (hack/install-deps.sh installs it)" >&2; exit 1; }
done

mkdir -p "$VM_DIR"
work=$VM_DIR/build
rm -rf "$work" "$VM_DIR/stamp"
mkdir -p "$work"
echo "vm/image.sh: debootstrap bookworm from $MIRROR (once; cached in $VM_DIR)" >&2
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$work/root" "$MIRROR" >"$VM_DIR/debootstrap.log" 2>&1 \
  || { tail -20 "$VM_DIR/debootstrap.log" >&2; exit 1; }

root=$work/root
echo berth-vm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 berth-vm\n' > "$root/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$root/etc/fstab"
# Nothing but the test owns the serial line: a getty there hangs up other writers.
for unit in serial-getty@ttyS0.service getty@tty1.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# The guest's test: /opt/berth-vm/guest.sh from the payload disk (vdb, a tar), results to vdc.
cat > "$root/etc/systemd/system/berth-vm-test.service" <<'UNIT'
[Unit]
Description=berth VM lane
After=multi-user.target
Wants=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p /opt/berth-vm && tar -xf /dev/vdb -C /opt/berth-vm && exec /bin/bash /opt/berth-vm/guest.sh'
ExecStopPost=/bin/systemctl --no-block poweroff --force
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/berth-vm-test.service "$root/etc/systemd/system/multi-user.target.wants/berth-vm-test.service"
: > "$root/etc/machine-id"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

cp "$(readlink -f "$root/vmlinuz")" "$work/vmlinuz"
cp "$(readlink -f "$root/initrd.img")" "$work/initrd.img"
rm -f "$work/rootfs.ext4"
# (mke2fs -d names what it creates on stdout, which is this script's answer: kept off it.)
mke2fs -q -t ext4 -L berth-vm -d "$root" "$work/rootfs.ext4" 2G >&2
mv "$work/rootfs.ext4" "$work/vmlinuz" "$work/initrd.img" "$VM_DIR/"
rm -rf "$work"
echo "$stamp" > "$VM_DIR/stamp"
echo "$VM_DIR"
