#!/bin/sh
# /init of oxeye's test VMs: mount what oxeye needs, bring up loopback, run the scenarios,
# print their outputs on the console (base64 between markers) and power off.
/bin/busybox --install -s /bin
export PATH=/bin:/oxeye LD_LIBRARY_PATH=/lib
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t debugfs nodev /sys/kernel/debug
mount -t tracefs nodev /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
# Keep kernel messages off the console: the host parses it.
dmesg -n 1
ip link set lo up
# Run counts and times of BPF programs, shown by bpftool (outputs for post-mortems).
echo 1 > /proc/sys/kernel/bpf_stats_enabled
hostname oxeye-vm
echo "@@oxeye-vm booted $(cut -d' ' -f1 /proc/uptime) $(uname -r) $(uname -m)"
sh /oxeye/scenarios.sh /oxeye /tmp/out 8080 4317 9464
for file in /tmp/out/*; do
    [ -f "$file" ] || continue
    echo "@@oxeye-vm file $(basename "$file")"
    base64 "$file"
    echo "@@oxeye-vm end"
done
echo "@@oxeye-vm done $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
