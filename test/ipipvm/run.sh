#!/usr/bin/env bash
# test/ipipvm/run.sh — prove the IPIP data path end to end in a VM.
#
# This machine's kernel has no ipip module, so the routes package's IPIP
# netns test skips here. This script boots Debian's own linux-image-amd64
# kernel (which has ipip) under qemu-system-x86_64 — KVM when /dev/kvm
# works, software emulation (TCG) otherwise — with an initramfs holding
# busybox, iproute2 and the compiled routes test binary, runs the IPIP
# tests (and the kernel Table test) inside, and exits with their status,
# read from the VM's serial console.
#
#   test/ipipvm/run.sh            (make test-ipip-vm)
#
# Environment: IPIPVM_TESTS (go test -run pattern, default
# 'TestKernelIPIP|TestKernelTable'), IPIPVM_TIMEOUT (s, default 600),
# RHIZOME_CACHE (default ~/.cache/rhizome: the kernel package is kept in
# $RHIZOME_CACHE/ipipvm), IPIPVM_KEEP=1 (keep the work directory).
#
# The kernel is extracted from the package (apt-get download + dpkg-deb
# -x), never installed: the host's boot setup is not touched.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TESTS=${IPIPVM_TESTS:-'TestKernelIPIP|TestKernelTable'}
TIMEOUT=${IPIPVM_TIMEOUT:-600}
CACHE=${RHIZOME_CACHE:-$HOME/.cache/rhizome}/ipipvm
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin

log() { printf '[ipipvm %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in qemu-system-x86_64 busybox dpkg-deb depmod modprobe apt-get gzip; do
	command -v "$tool" >/dev/null || die "$tool is missing (make deps installs qemu-system-x86, busybox-static, kmod)"
done
busybox --list | grep -x cpio >/dev/null || die "busybox has no cpio applet (install busybox-static)"

# --- the kernel ----------------------------------------------------------
# linux-image-amd64 is a metapackage; the image it depends on names the
# kernel version.
kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
PKG=$(kpkg)
if [ -z "$PKG" ]; then
	log "apt has no package lists yet; running apt-get update"
	apt-get update -q >/dev/null
	PKG=$(kpkg)
fi
[ -n "$PKG" ] || die "cannot find the kernel package linux-image-amd64 depends on"
KVER=${PKG#linux-image-}
KDIR=$CACHE/$PKG
if [ ! -f "$KDIR/.done" ]; then
	log "fetching $PKG into $KDIR"
	rm -rf "$KDIR" && mkdir -p "$KDIR/deb"
	chmod 755 "$KDIR/deb" # apt's sandbox user writes here
	(cd "$KDIR/deb" && apt-get download -q "$PKG" >/dev/null 2>&1) ||
		{ apt-get update -q >/dev/null && (cd "$KDIR/deb" && apt-get download -q "$PKG" >/dev/null); } ||
		die "apt-get download $PKG failed"
	dpkg-deb -x "$KDIR"/deb/*.deb "$KDIR/root"
	depmod -b "$KDIR/root" "$KVER"
	rm -rf "$KDIR/deb"
	touch "$KDIR/.done"
fi
VMLINUZ=$KDIR/root/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || die "no kernel image in $KDIR"

# --- the initramfs -------------------------------------------------------
WORK=$(mktemp -d /tmp/ipipvm.XXXXXX)
cleanup() {
	if [ "${IPIPVM_KEEP:-0}" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
IRD=$WORK/initramfs
mkdir -p "$IRD"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,lib/modules}
ln -s ../run "$IRD/var" 2>/dev/null || { mkdir -p "$IRD/var" && ln -s ../run "$IRD/var/run"; }

log "building the routes test binary (static)"
(cd "$ROOT" && CGO_ENABLED=0 go test -c -tags privileged -o "$IRD/routes.test" ./routes/) || die "go test -c failed"

cp "$(command -v busybox)" "$IRD/bin/busybox"
# iproute2 and the shared libraries it needs, at their own paths.
IP=$(command -v ip)
cp "$IP" "$IRD/sbin/ip"
for lib in $(ldd "$IP" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }'); do
	mkdir -p "$IRD$(dirname "$lib")"
	cp -L "$lib" "$IRD$lib"
done

# Modules the tests need, in load order: ipip, veth, bridge (the lab's
# router), nf_tables (the reconciler's NAT sync lists its tables),
# xfrm_user (a netlink Handle opens every family it knows).
: >"$IRD/modules.order"
for m in ipip veth bridge nf_tables xfrm_user; do
	modprobe -d "$KDIR/root" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" { print $2 }' |
		while read -r ko; do
			base=$(basename "$ko")
			grep -qx "$base" "$IRD/modules.order" && continue
			cp "$ko" "$IRD/lib/modules/$base"
			echo "$base" >>"$IRD/modules.order"
		done
done

cat >"$IRD/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
ln -sf /sbin/ip /bin/ip # iproute2, not busybox's ip
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/tmp TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns
for m in \$(cat /modules.order); do insmod /lib/modules/\$m || echo "insmod \$m failed"; done
ip link set lo up
echo "RHIZOME-VM kernel \$(uname -r), \$(grep -c ^processor /proc/cpuinfo) CPU(s), \$(dmesg | grep -o 'Hypervisor detected: [A-Za-z]*' | head -1)"
cd /tmp
/routes.test -test.v -test.count=1 -test.timeout=$((TIMEOUT - 60))s -test.run '$TESTS'
echo "RHIZOME-VM-RESULT rc=\$?"
poweroff -f
EOF
chmod +x "$IRD/init"
(cd "$IRD" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$WORK/initrd.gz")
log "initramfs $(du -h "$WORK/initrd.gz" | cut -f1), kernel $KVER"

# --- boot ----------------------------------------------------------------
CONSOLE=$WORK/console.log
# boot ACCEL BOOT_TIMEOUT: run the VM; fail (rc 124) if it has not reached
# our init within BOOT_TIMEOUT s. Nested KVM can accept a VM and then never
# run its kernel (seen on this project's Firecracker machines: the guest
# hangs after the BIOS), so KVM gets a short boot deadline and TCG is the
# fallback.
boot() {
	local accel=$1 boot_to=$2 cpu=max pid start
	[ "$accel" = kvm ] && cpu=host,-arch-capabilities # MSR 0x10a cannot be set under nested KVM
	: >"$CONSOLE"
	qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -smp 2 -m 1024 \
		-nographic -no-reboot -monitor none -serial stdio \
		-kernel "$VMLINUZ" -initrd "$WORK/initrd.gz" \
		-append "console=ttyS0 panic=-1 quiet loglevel=3" </dev/null >"$CONSOLE" 2>"$WORK/qemu.err" &
	pid=$!
	start=$SECONDS
	while kill -0 "$pid" 2>/dev/null; do
		if ! grep -q "RHIZOME-VM kernel" "$CONSOLE" && [ $((SECONDS - start)) -ge "$boot_to" ]; then
			log "the VM did not boot within ${boot_to}s under $accel"
			kill "$pid"; wait "$pid" 2>/dev/null
			return 124
		fi
		if [ $((SECONDS - start)) -ge "$TIMEOUT" ]; then
			log "the VM did not finish within ${TIMEOUT}s"
			kill "$pid"; wait "$pid" 2>/dev/null
			return 124
		fi
		sleep 1
	done
	wait "$pid"
}
qrc=0
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
	log "booting under qemu with KVM"
	boot kvm 20 || qrc=$?
	if [ $qrc != 0 ] && ! grep -q "RHIZOME-VM kernel" "$CONSOLE"; then
		log "KVM does not work here (qemu: $(head -c 200 "$WORK/qemu.err" | tr '\n' ' ')); falling back to TCG"
		qrc=0
		boot tcg "$TIMEOUT" || qrc=$?
	fi
else
	log "no usable /dev/kvm: booting under qemu with TCG (software emulation)"
	boot tcg "$TIMEOUT" || qrc=$?
fi
tr -d '\r' <"$CONSOLE" | grep -E '^(RHIZOME-VM|=== RUN|--- |    |PASS|FAIL|ok|panic)' || true
rc=$(tr -d '\r' <"$CONSOLE" | sed -n 's/^RHIZOME-VM-RESULT rc=\([0-9]*\).*/\1/p' | tail -1)
if [ -z "$rc" ]; then
	IPIPVM_KEEP=1
	die "no result from the VM (qemu exit $qrc; console and qemu.err in $WORK)"
fi
if [ "$rc" != 0 ]; then
	IPIPVM_KEEP=1
	die "IPIP tests failed in the VM (rc=$rc); console in $CONSOLE"
fi
if ! tr -d '\r' <"$CONSOLE" | grep -q -- '--- PASS: TestKernelIPIP '; then
	IPIPVM_KEEP=1
	die "TestKernelIPIP did not pass in the VM (skipped?); console in $CONSOLE"
fi
log "IPIP tests passed in the VM"
