#!/bin/sh
# oxeye's VM scenarios, also run as is on the host. One oxeye session, sampling at 99 Hz (and off CPU at every switch-out) and
# exporting to a real OTLP receiver, around known workloads and an HTTP exchange over
# loopback; then its exit, and what it left in the kernel. The host checks the outputs.
#
# Usage: scenarios.sh BIN_DIR OUT_DIR HTTP_PORT OTLP_PORT METRICS_PORT
# BIN_DIR holds oxeye, otlp-sink, busybox, bpftool and the workloads: chain (frame pointers),
# chain-nofp (C -O2 without), chain-rs (Rust release without), syscalls (frame pointers), and
# on arm64 chain-pac and chain-pac-nofp (pointer authentication, with and without) and
# pac-probe (shows whether return addresses really are signed), and with-caps.
#
# After the root session, oxeye runs again as `nobody` with exactly the capabilities the
# README documents (outputs prefixed `nobody-`; `paranoid-` first where
# kernel.perf_event_paranoid is above 2). With OXEYE_CAPABILITY_MATRIX=1, it also runs
# once without each of them in turn, as root otherwise limited to the rest (`without-CAP-`).
bin=$1 out=$2 http_port=$3 otlp_port=$4 metrics_port=$5
# The README's "Capabilities" table (CAP_SYS_RESOURCE is for kernels before 5.11 only).
documented="bpf,perfmon,sys_ptrace,syslog,dac_read_search,checkpoint_restore"
mkdir -p "$out/www"
echo "hello from oxeye" > "$out/www/hello.txt"
mark() { echo "@@oxeye-vm step $1 $(cut -d' ' -f1 /proc/uptime)"; }

# Wait up to $2 tenths of a second for command $1 to succeed.
wait_for() {
    tries=0
    until eval "$1"; do
        tries=$((tries + 1))
        [ "$tries" -ge "$2" ] && return 1
        sleep 0.1
    done
}

# The HTTP server, answering before oxeye starts (so the readiness probe is not traced).
"$bin/busybox" httpd -f -p "127.0.0.1:$http_port" -h "$out/www" &
httpd=$!
wait_for "'$bin/busybox' wget -q -O /dev/null http://127.0.0.1:$http_port/hello.txt 2>/dev/null" 300 || echo "httpd did not answer"
# A second server for the burst below, on the next port (the checks of the first count its
# connections exactly).
burst_port=$((http_port + 1))
echo "burst" > "$out/www/burst.txt"
"$bin/busybox" httpd -f -p "127.0.0.1:$burst_port" -h "$out/www" &
burst_httpd=$!
wait_for "'$bin/busybox' wget -q -O /dev/null http://127.0.0.1:$burst_port/hello.txt 2>/dev/null" 300 || echo "the burst httpd did not answer"

"$bin/otlp-sink" --listen "127.0.0.1:$otlp_port" --spans-out "$out/spans.tsv" > "$out/otlp-sink.log" 2>&1 &
sink=$!
mark start
"$bin/oxeye" -F 99 --no-live --output-dir "$out" --collection-agent "127.0.0.1:$otlp_port" --disable-tls \
    --reporter-interval 1 --prometheus-listen "127.0.0.1:$metrics_port" --off-cpu-threshold 1 \
    --log "${OXEYE_LOG:-info}" 2> "$out/oxeye.stderr" &
oxeye=$!
wait_for "grep -q sampling '$out/oxeye.stderr' || ! kill -0 $oxeye 2>/dev/null" 3000
mark sampling

"$bin/chain" 4
mark chain
# The no-frame-pointer workloads pause 1 s before working, so oxeye has described them by
# then, as when it profiles a running process (the host tests start them before oxeye).
"$bin/chain-nofp" 4 1
mark chain-nofp
"$bin/chain-rs" 4 1
mark chain-rs
"$bin/syscalls" 3
mark syscalls
# arm64 only: the same chain with return addresses signed (pointer authentication).
if [ -x "$bin/chain-pac" ]; then
    # Eight processes, eight keys: with 52-bit virtual addresses the code has only 3 bits and
    # is zero for one return address in eight.
    for n in 1 2 3 4 5 6 7 8; do "$bin/pac-probe"; done > "$out/pac-probe.txt"
    "$bin/chain-pac" 4
    mark chain-pac
    "$bin/chain-pac-nofp" 4 1
    mark chain-pac-nofp
fi
for n in 1 2 3 4 5; do
    "$bin/busybox" wget -q -O /dev/null "http://127.0.0.1:$http_port/hello.txt"
done
# A 404: wget exits 1.
"$bin/busybox" wget -q -O /dev/null "http://127.0.0.1:$http_port/missing.txt" 2>/dev/null
mark http
# The burst: four clients fetching /burst.txt at once for 3 s of wall-clock time, each
# counting the requests that completed; every one must come out as spans and in the metrics.
burst_end=$(( $(cut -d. -f1 /proc/uptime) + 3 ))
burst_clients=""
for client in 1 2 3 4; do
    (
        n=0
        while [ "$(cut -d. -f1 /proc/uptime)" -lt "$burst_end" ]; do
            "$bin/busybox" wget -q -O /dev/null "http://127.0.0.1:$burst_port/burst.txt" && n=$((n + 1))
        done
        echo "$n" > "$out/burst-$client.txt"
    ) &
    burst_clients="$burst_clients $!"
done
wait $burst_clients
mark burst
# Let oxeye read the last records and export them.
sleep 2
"$bin/busybox" wget -q -O "$out/metrics.txt" "http://127.0.0.1:$metrics_port/metrics"
# oxeye's programs while it runs, with their run counts where the kernel keeps them (for a
# failure's post-mortem).
"$bin/bpftool" prog show > "$out/bpftool-running.txt" 2>&1
# oxeye's memory after the whole session, and the CPUs it sized its maps for.
grep -E '^(VmHWM|VmRSS|RssAnon|RssFile|RssShmem)' "/proc/$oxeye/status" > "$out/oxeye-memory.txt"
grep -c '^processor' /proc/cpuinfo > "$out/cpus.txt"

mark stop
kill -INT "$oxeye"
wait "$oxeye"
echo $? > "$out/oxeye.exit"
mark exit
# The kernel frees programs asynchronously: give it up to 5 s.
wait_for "'$bin/bpftool' prog show > '$out/bpftool-progs.txt' 2>&1; ! grep -q oxeye_ '$out/bpftool-progs.txt'" 50
kill -TERM "$sink"
wait "$sink"

# The chain as another user's file that only they may read (and run): oxeye needs
# CAP_DAC_READ_SEARCH to build its unwind table, even as root.
secret=$(mktemp -d /tmp/oxeye-secret.XXXXXX)
chmod 755 "$secret"
cp "$bin/chain-nofp" "$secret/chain-secret"
chown 1000:1000 "$secret/chain-secret"
chmod 700 "$secret/chain-secret"

# A short session of oxeye as user $2 with only the capabilities $3 (see with_caps.c): the C
# chain without frame pointers from a file only root may read, the syscalls workload and the
# HTTP exchange. Its outputs go to $out/$1-*.
limited_session() {
    name=$1 dir=$(mktemp -d "/tmp/oxeye-$1.XXXXXX")
    chown "$2" "$dir"
    "$bin/otlp-sink" --listen "127.0.0.1:$otlp_port" --spans-out "$out/$name-spans.tsv" > "$dir/otlp-sink.log" 2>&1 &
    limited_sink=$!
    "$bin/with-caps" "$2" "$3" "$bin/oxeye" -F 99 --no-live --output-dir "$dir" --collection-agent "127.0.0.1:$otlp_port" \
        --disable-tls --reporter-interval 1 --log "${OXEYE_LOG:-info}" 2> "$out/$name-oxeye.stderr" &
    limited=$!
    wait_for "grep -q sampling '$out/$name-oxeye.stderr' || ! kill -0 $limited 2>/dev/null" 3000
    if kill -0 "$limited" 2>/dev/null; then
        "$bin/with-caps" 1000 none "$secret/chain-secret" 4 1
        "$bin/syscalls" 3
        for n in 1 2 3 4 5; do
            "$bin/busybox" wget -q -O /dev/null "http://127.0.0.1:$http_port/hello.txt"
        done
        "$bin/busybox" wget -q -O /dev/null "http://127.0.0.1:$http_port/missing.txt" 2>/dev/null
        sleep 2
        kill -INT "$limited"
    fi
    wait "$limited"
    echo $? > "$out/$name-oxeye.exit"
    kill -TERM "$limited_sink"
    wait "$limited_sink"
    [ -f "$dir/stacks.folded" ] && cp "$dir/stacks.folded" "$out/$name-stacks.folded"
    rm -rf "$dir"
    mark "$name"
}
# Debian's kernels default kernel.perf_event_paranoid to 3, where their patch makes every
# perf event need CAP_SYS_ADMIN: oxeye must stop with one line saying so. At 2 (mainline's
# default, which the README asks such hosts to set) the documented capabilities are enough.
paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)
if [ "$paranoid" -gt 2 ]; then
    limited_session paranoid 65534 "$documented"
    echo 2 > /proc/sys/kernel/perf_event_paranoid
fi
limited_session nobody 65534 "$documented"
if [ "${OXEYE_CAPABILITY_MATRIX:-0}" = 1 ]; then
    for cap in $(echo "$documented" | tr , ' '); do
        limited_session "without-$cap" 0 "$(echo "$documented" | tr , '\n' | grep -vx "$cap" | paste -sd, -)"
    done
fi
[ "$paranoid" -gt 2 ] && echo "$paranoid" > /proc/sys/kernel/perf_event_paranoid
kill "$httpd" "$burst_httpd"
rm -rf "$secret"
ls "$out" > "$out/outputs.txt"
mark done
