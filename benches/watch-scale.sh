#!/usr/bin/env bash
# Watch start-up at scale: how long until a watch of a large, already replicated tree is
# ready, and how much memory it holds while idle, for both backends and for lsyncd.
#
#   benches/watch-scale.sh                 # 100k entries
#   ENTRIES=1000000 benches/watch-scale.sh # the full size (1M entries, ~22k directories)
#
# The tree: HOMES top-level directories, each holding directories of FILES_PER_DIR
# small files (ENTRIES in all, about 45 entries a directory as in real homes). It lives
# on an ext4 image (fanotify needs a filesystem with file handles; a tmpfs-backed loop
# image keeps file creation cheap, and inline_data keeps small files out of data
# blocks), mounted under SCRATCH. DEST is made complete first with one push.
#
# Measured, each RUNS times (the median is reported):
#   push      a no-change `fsync-repl push --delete SRC DEST` (hyperfine; watch mirrors,
#             so its first push deletes too), and its peak RSS (/usr/bin/time -v).
#   fanotify  `fsync-repl watch --backend fanotify`, a first start (no state file, so a
#   inotify   full push): the time from the start until the state file records the
#             first successful batch (the state file's mtime), then VmRSS from
#             /proc/PID/status after SETTLE seconds of idling, and VmHWM.
#   lsyncd    lsyncd 2.x (`default.rsync`, nodaemon) on the same pair: the time until
#             its log says the start-up sync finished, then its VmRSS after SETTLE s.
#             The anchor: the tool the issue of scale is known from.
#   latency   (LATENCY=1, the default) with `watch --backend fanotify` running on the
#             tree: SAMPLES single-file writes in the last home, one every 0.3 s, each
#             timed from its close() until DEST holds the same content (polled every
#             2 ms): at idle, then while BURST files (100 a directory) are written into
#             the first home as fast as python can. p50 and p99 (the max of so few).
# Targets (from the design): watch ready <= 1.2 x the no-change push; idle RSS <= 64 MiB.
#
# Environment (all optional)
#   ENTRIES        files and directories in the tree              [100000]
#   HOMES          top-level directories                          [50]
#   FILES_PER_DIR  files per directory                            [44]
#   RUNS           repetitions of each measurement                [3]
#   SETTLE         idle seconds before RSS is read                [5]
#   SCRATCH        where the image (or, with LOOP=0, the tree) lives   [/dev/shm]
#   LOOP=0         no loop image: the tree directly in SCRATCH (must be a filesystem
#                  fanotify accepts, e.g. /var/tmp on ext4)
#   FSYNC_REPL     binary [REPO/target/release/fsync-repl, after cargo build --release]
#   LATENCY=0      skip the latency measurement
#   SAMPLES        latency samples, at idle and during the burst    [30]
#   BURST          files of the burst                              [50000]
#   KEEP=1         keep the scratch directory
#
# Tools: bash, python3, hyperfine, /usr/bin/time, lsyncd (Debian package `lsyncd`;
# skipped with a note when missing), mkfs.ext4 and mount (LOOP=1: root).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENTRIES=${ENTRIES:-100000}
HOMES=${HOMES:-50}
FILES_PER_DIR=${FILES_PER_DIR:-44}
RUNS=${RUNS:-3}
SETTLE=${SETTLE:-5}
SCRATCH=${SCRATCH:-/dev/shm}
LOOP=${LOOP:-1}
KEEP=${KEEP:-0}
LATENCY=${LATENCY:-1}
SAMPLES=${SAMPLES:-30}
BURST=${BURST:-50000}
BIN=${FSYNC_REPL:-$REPO/target/release/fsync-repl}

die() { echo "watch-scale.sh: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "no binary at $BIN (cargo build --release, or set FSYNC_REPL)"
command -v hyperfine >/dev/null || die "hyperfine is not installed"
[ -x /usr/bin/time ] || die "/usr/bin/time is not installed (Debian package time)"

WORK=$(mktemp -d "$SCRATCH/watch-scale.XXXXXX")
MNT=$WORK/mnt
cleanup() {
    for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$LOOP" = 1 ] && mountpoint -q "$MNT"; then umount "$MNT" || true; fi
    [ "$KEEP" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$MNT"
if [ "$LOOP" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "LOOP=1 needs root (or LOOP=0 SCRATCH=/var/tmp)"
    # Two trees of ENTRIES (and the burst) inodes each, 256-byte inodes, small files
    # inline.
    inodes=$(((ENTRIES + BURST) * 2 + 100000))
    size_mb=$((inodes * 512 / 1048576 + 512))
    truncate -s "${size_mb}M" "$WORK/fs.img"
    mkfs.ext4 -q -F -O inline_data -I 256 -N "$inodes" "$WORK/fs.img"
    mount -o loop "$WORK/fs.img" "$MNT"
fi
SRC=$MNT/src
DEST=$MNT/dest
STATE=$WORK/state.json

cp "$BIN" "$WORK/fsync-repl"
BIN=$WORK/fsync-repl

echo "== building $ENTRIES entries in $HOMES homes under $MNT"
python3 - "$SRC" "$ENTRIES" "$HOMES" "$FILES_PER_DIR" <<'EOF'
import os, sys
root, entries, homes, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
os.makedirs(root)
per_home = entries // homes
for h in range(homes):
    home = os.path.join(root, f"user{h:04d}")
    os.mkdir(home)
    made, d = 1, 0
    while made < per_home:
        group = os.path.join(home, f"g{d // 100:03d}")
        if d % 100 == 0:
            os.mkdir(group)
            made += 1
        sub = os.path.join(group, f"d{d % 100:02d}")
        os.mkdir(sub)
        made += 1
        for f in range(min(per, per_home - made)):
            with open(os.path.join(sub, f"f{f:03d}"), "wb") as fh:
                fh.write(b"%d %d %d\n" % (h, d, f))
            made += 1
        d += 1
print(f"   {sum(len(fs) + len(ds) for _, ds, fs in os.walk(root))} entries, "
      f"{sum(1 for _ in os.walk(root))} directories")
EOF
echo "== initial push (DEST complete)"
"$BIN" push -q "$SRC" "$DEST"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
rss_kib() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

echo "== no-change push"
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/push.json" \
    "$BIN push -q --delete $SRC $DEST" >/dev/null
push_s=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][0]['median'])" "$WORK/push.json")
/usr/bin/time -v "$BIN" push -q --delete "$SRC" "$DEST" 2>"$WORK/push.time"
push_rss=$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}' "$WORK/push.time")

# Starts a watch of the tree with a fresh state file and prints "ready_s rss_kib hwm_kib".
watch_once() {
    local backend=$1 t0 pid ready rss hwm
    rm -f "$STATE"
    t0=$(now)
    "$BIN" watch -q --backend "$backend" --state-file "$STATE" "$SRC" "$DEST" \
        2>"$WORK/watch.err" &
    pid=$!
    until [ -s "$STATE" ] && grep -q '"last_success": [0-9]' "$STATE" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || die "watch --backend $backend ended: $(cat "$WORK/watch.err")"
        sleep 0.02
    done
    # The save that recorded the first success is the last one while nothing changes:
    # its time is exact, where the polling loop's is 20 ms coarse.
    ready=$(echo "$(stat -c %.9Y "$STATE") - $t0" | bc -l)
    sleep "$SETTLE"
    rss=$(rss_kib "$pid" VmRSS)
    hwm=$(rss_kib "$pid" VmHWM)
    kill -TERM "$pid"
    wait "$pid" || true
    echo "$ready $rss $hwm"
}

lsyncd_once() {
    local t0 pid ready rss
    rm -f "$WORK/lsyncd.log"
    cat >"$WORK/lsyncd.conf" <<EOF
settings { logfile = "$WORK/lsyncd.log", nodaemon = true, insist = false }
sync { default.rsync, source = "$SRC", target = "$DEST", delay = 1,
       rsync = { archive = true, _extra = { "--delete" } } }
EOF
    t0=$(now)
    lsyncd "$WORK/lsyncd.conf" >/dev/null 2>&1 &
    pid=$!
    until grep -q "Startup of .* finished" "$WORK/lsyncd.log" 2>/dev/null; do
        # (lsyncd's log has whole seconds only: this one is polled, 20 ms coarse)
        kill -0 "$pid" 2>/dev/null || die "lsyncd ended: $(tail -5 "$WORK/lsyncd.log" 2>/dev/null)"
        sleep 0.02
    done
    ready=$(echo "$(now) - $t0" | bc -l)
    sleep "$SETTLE"
    rss=$(rss_kib "$pid" VmRSS)
    kill -TERM "$pid"
    wait "$pid" || true
    echo "$ready $rss 0"
}

declare -A READY RSS HWM
for kind in fanotify inotify lsyncd; do
    if [ "$kind" = lsyncd ] && ! command -v lsyncd >/dev/null; then
        echo "== lsyncd: not installed (apt-get install lsyncd); skipped"
        continue
    fi
    echo "== $kind: $RUNS starts"
    : >"$WORK/$kind.runs"
    for _ in $(seq "$RUNS"); do
        if [ "$kind" = lsyncd ]; then lsyncd_once; else watch_once "$kind"; fi >>"$WORK/$kind.runs"
    done
    READY[$kind]=$(cut -d' ' -f1 "$WORK/$kind.runs" | median)
    RSS[$kind]=$(cut -d' ' -f2 "$WORK/$kind.runs" | median)
    HWM[$kind]=$(cut -d' ' -f3 "$WORK/$kind.runs" | median)
done

echo
printf '%-22s %10s %12s %14s %14s\n' "" "ready s" "x push" "idle RSS MiB" "peak RSS MiB"
printf '%-22s %10.2f %12s %14s %14.1f\n' "push (no change)" "$push_s" "1.00" "-" "$(echo "$push_rss/1024" | bc -l)"
for kind in fanotify inotify lsyncd; do
    [ -n "${READY[$kind]:-}" ] || continue
    hwm=${HWM[$kind]}
    printf '%-22s %10.2f %12.2f %14.1f %14s\n' "$kind" "${READY[$kind]}" \
        "$(echo "${READY[$kind]} / $push_s" | bc -l)" "$(echo "${RSS[$kind]}/1024" | bc -l)" \
        "$([ "$hwm" = 0 ] && echo - || printf '%.1f' "$(echo "$hwm/1024" | bc -l)")"
done
fan_ratio=$(echo "${READY[fanotify]} / $push_s" | bc -l)
fan_rss=$(echo "${RSS[fanotify]} / 1024" | bc -l)
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo ok; else echo FAIL; fi; }
echo
echo "fanotify ready <= 1.2 x push: $(verdict "$fan_ratio <= 1.2")  idle RSS <= 64 MiB: $(verdict "$fan_rss <= 64")"

[ "$LATENCY" = 1 ] || exit 0
echo
echo "== latency of a change in the last home (fanotify), at idle and during a $BURST-file burst in the first"
rm -f "$STATE"
"$BIN" watch -q --backend fanotify --state-file "$STATE" "$SRC" "$DEST" 2>"$WORK/watch.err" &
wpid=$!
until [ -s "$STATE" ] && grep -q '"last_success": [0-9]' "$STATE" 2>/dev/null; do
    kill -0 "$wpid" 2>/dev/null || die "watch ended: $(cat "$WORK/watch.err")"
    sleep 0.05
done
python3 - "$SRC" "$DEST" "$SAMPLES" "$BURST" "$STATE" <<'PY' || { tail -5 "$WORK/watch.err" >&2; exit 1; }
import json, os, subprocess, sys, time
src, dst, samples, burst, state = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]


def batches():
    with open(state) as f:
        return json.load(f)["batches"]

homes = sorted(os.listdir(src))
first, last = homes[0], homes[-1]
os.makedirs(os.path.join(src, last, "lat"), exist_ok=True)
time.sleep(1)


def sample(i):
    rel = os.path.join(last, "lat", f"f{i % 10}")
    data = b"%d %.9f\n" % (i, time.time())
    with open(os.path.join(src, rel), "wb") as f:
        f.write(data)
    t = time.monotonic()
    while True:
        try:
            with open(os.path.join(dst, rel), "rb") as f:
                if f.read() == data:
                    return time.monotonic() - t
        except FileNotFoundError:
            pass
        if time.monotonic() - t > 300:
            sys.exit("a change was not replicated within 300 s")
        time.sleep(0.002)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def run(n, start):
    out = []
    for i in range(n):
        out.append(sample(start + i))
        time.sleep(0.3)
    return out


idle = run(samples, 0)
code = (
    "import os, time\n"
    "t = time.monotonic()\n"
    f"root = os.path.join({src!r}, {first!r}, 'burst')\n"
    f"for i in range({burst}):\n"
    "    d = os.path.join(root, 'd%04d' % (i // 100))\n"
    "    if i % 100 == 0:\n"
    "        os.makedirs(d)\n"
    "    with open(os.path.join(d, 'f%03d' % (i % 100)), 'wb') as f:\n"
    "        f.write(b'burst %d' % i)\n"
    "print(time.monotonic() - t)\n"
)
b0 = batches()
t0 = time.monotonic()
writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
busy = run(samples, 10_000)
written = float(writer.communicate()[0])
last_file = os.path.join(dst, first, "burst", "d%04d" % ((burst - 1) // 100),
                         "f%03d" % ((burst - 1) % 100))
while not os.path.exists(last_file):
    if time.monotonic() - t0 > 600:
        sys.exit("the burst was not replicated within 600 s (see the watch's log)")
    time.sleep(0.05)
done = time.monotonic() - t0
print(f"   idle:        p50 {pct(idle, 50) * 1000:6.0f} ms   p99 {pct(idle, 99) * 1000:6.0f} ms"
      f"   ({samples} changes)")
print(f"   with burst:  p50 {pct(busy, 50) * 1000:6.0f} ms   p99 {pct(busy, 99) * 1000:6.0f} ms"
      f"   ({samples} changes)")
time.sleep(1)
print(f"   the burst: written in {written:.1f} s, its last file in DEST after {done:.1f} s, "
      f"{batches() - b0} batches")
PY
kill -TERM "$wpid"
wait "$wpid" || true
