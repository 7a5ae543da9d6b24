#!/usr/bin/env bash
# Foreground I/O impact: does a replication starve a user's random I/O on the same disk?
#
#   benches/io-impact.sh [CONFIG...]          (default: idle rsync rsync-ionice fsync
#                                              fsync-bw20 bwlimit)
#
# A foreground workload -- fio, 4k random read/write 70/30, O_DIRECT, psync, iodepth 1,
# time-based (FIO_RUNTIME s) on a file on the root filesystem -- is started at the same
# moment as a replicator that copies the corpus (examples/corpus.rs make: ~16.6k files,
# 437 MB) from the root filesystem to the root filesystem. Before every run the
# destination is removed, everything is synced and the page cache dropped
# (`echo 3 > /proc/sys/vm/drop_caches`), so the copy reads a cold source.
#
# Configurations
#   idle           fio alone (the reference)
#   rsync          rsync -a SRC/ DST/
#   rsync-ionice   ionice -c3 nice -n19 rsync -a SRC/ DST/
#   fsync          fsync-repl push SRC DST                  (defaults: adaptive, idle class)
#   fsync-bw20     fsync-repl push --bwlimit 20M SRC DST
#   fsync:OPTS     fsync-repl push OPTS SRC DST, e.g. 'fsync:--max-io-pressure 2'
#   bwlimit        --bwlimit accuracy: one BW_FILE_MIB file copied with
#                  `fsync-repl push --bwlimit BW_RATE --no-adaptive`; the temporary file's
#                  size is sampled every second; each 1 s window after the first must be
#                  within +-5% of BW_RATE
#
# Per run we record, from fio's JSON (--percentile_list=50:99): read and write IOPS and
# read completion-latency p50/p99 over the whole fio run; from fio's per-I/O completion log
# (--write_lat_log, unix-epoch timestamps) the same figures restricted to the "overlap"
# window, the time during which the replicator was actually running (a copy that ends
# before fio does would otherwise be diluted by the quiet tail); the replicator's wall
# time (the whole copy, which may outlast fio) and the time a `sync` right after it takes
# (rsync leaves its data dirty in the page cache; fsync-repl makes it durable itself);
# the kernel's I/O pressure (/proc/pressure/io "some") and the bytes the disk read and
# wrote during the fio run beyond fio's own (the replicator's share, writeback included;
# also anything else running on the machine: see the idle row); and for fsync-repl its
# --json rate_changes/throttled_secs and its -v log (timestamped), kept with the
# pressure samples (every 250 ms) under WORK/logs/. Every fsync-repl replica is checked with corpus compare.
# Each configuration runs RUNS times, in rounds (idle, rsync, ..., idle, rsync, ...);
# the summary shows medians, and medians of per-round ratios to the idle run of the same
# round (the disk's speed drifts between rounds on a shared virtual disk).
#
# Targets (defaults `fsync` against `idle` and `rsync-ionice`):
#   read p99 <= 1.15 x idle, total IOPS >= 0.95 x idle, wall time <= 1.5 x rsync-ionice.
#
# Environment (all optional)
#   WORK          scratch directory on the disk under test  [/var/tmp/fsync-io-impact]
#                 (must not be tmpfs: the corpus, the replicas and fio's file live here)
#   CORPUS       the corpus tool [built from examples/corpus.rs]
#   FSYNC_REPL    binary to measure [REPO/target/release/fsync-repl after cargo build --release]
#   RUNS          runs per configuration                    [3]
#   FIO_RUNTIME   fio runtime, seconds (>= 6)               [8]
#   FIO_SIZE      fio file size                             [1G]
#   BW_RATE       rate for the bwlimit test                 [8M]
#   BW_FILE_MIB   file size for the bwlimit test, MiB       [200]
#   KEEP=1        keep the corpus and fio file for the next invocation (default: kept;
#                 KEEP=0 removes WORK at the end)
#
# Needs root (drop_caches), fio (apt-get install -y fio), rsync, ionice, python3.
# Exit status: 0 when every replica is correct (missed targets print FAIL), 1 otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/var/tmp/fsync-io-impact}
RUNS=${RUNS:-3}
FIO_RUNTIME=${FIO_RUNTIME:-8}
FIO_SIZE=${FIO_SIZE:-1G}
BW_RATE=${BW_RATE:-8M}
BW_FILE_MIB=${BW_FILE_MIB:-200}
KEEP=${KEEP:-1}
BUILD=0
[[ -z ${FSYNC_REPL:-} ]] && BUILD=1
FSYNC_REPL=${FSYNC_REPL:-$REPO/target/release/fsync-repl}

die() { echo "io-impact.sh: $*" >&2; exit 1; }

configs=("$@")
[[ ${#configs[@]} -eq 0 ]] && configs=(idle rsync rsync-ionice fsync fsync-bw20 bwlimit)

[[ $(id -u) -eq 0 ]] || die "must run as root (drop_caches)"
for t in rsync ionice nice python3; do command -v $t >/dev/null || die "$t missing"; done
if ! command -v fio >/dev/null; then
    apt-get install -y fio >/dev/null 2>&1 || die "fio missing (apt-get install -y fio)"
fi
(( FIO_RUNTIME >= 6 )) || die "FIO_RUNTIME must be >= 6"
if [[ $BUILD -eq 1 ]]; then
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x $FSYNC_REPL ]] || die "no binary at $FSYNC_REPL"
. "$REPO/benches/corpus.sh"

mkdir -p "$WORK"
fstype=$(stat -f -c %T "$WORK")
[[ $fstype == tmpfs || $fstype == ramfs ]] && die "WORK=$WORK is on $fstype: use the disk"
SRC=$WORK/src
DST=$WORK/dst
FIOFILE=$WORK/fio.dat
LOGS=$WORK/logs/$(date +%Y%m%dT%H%M%S)
mkdir -p "$LOGS"
# Logs and results go to tmpfs when possible so they add no I/O to the disk under test.
TMPLOG=$(mktemp -d /dev/shm/io-impact.XXXXXX 2>/dev/null || mktemp -d)
trap 'cp -r "$TMPLOG"/. "$LOGS"/ 2>/dev/null; rm -rf "$TMPLOG"; [[ $KEEP == 0 ]] && rm -rf "$WORK"' EXIT

# The block device holding WORK, for /sys/class/block/*/stat and the scheduler.
dev=$(findmnt -n -o SOURCE --target "$WORK" | sed 's|^/dev/||')
DEVSTAT=/sys/class/block/$dev/stat
[[ -r $DEVSTAT ]] || DEVSTAT=
disk=$dev
[[ -e /sys/class/block/$dev/partition ]] && disk=$(basename "$(readlink -f /sys/class/block/$dev/..)")
sched=$(cat /sys/block/$disk/queue/scheduler 2>/dev/null || echo unknown)

echo "io-impact: WORK=$WORK ($fstype on /dev/$dev, scheduler: $sched), kernel $(uname -r)"
echo "io-impact: fsync-repl $FSYNC_REPL, RUNS=$RUNS, FIO_RUNTIME=${FIO_RUNTIME}s, logs in $LOGS"

if [[ ! -f $WORK/.src-complete ]]; then
    rm -rf "$SRC"
    echo "io-impact: creating the corpus in $SRC"
    "$CORPUS" make "$SRC" >/dev/null
    : > "$WORK/.src-complete"
fi
if [[ ! -f $FIOFILE ]]; then
    fio --name=layout --filename="$FIOFILE" --size="$FIO_SIZE" --rw=write --bs=1M \
        --direct=1 --ioengine=psync --output=/dev/null
fi

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
psi_some() { awk '/^some/ { sub("total=", "", $5); print $5 }' /proc/pressure/io; }
sectors() { [[ -n $DEVSTAT ]] && awk '{ print $3 + 0, $7 + 0 }' "$DEVSTAT" || echo 0 0; }   # read, written

replicator_cmd() {   # config -> command words in the array CMD
    local c=$1
    case $c in
        idle) CMD=() ;;
        rsync) CMD=(rsync -a "$SRC/" "$DST/") ;;
        rsync-ionice) CMD=(ionice -c3 nice -n19 rsync -a "$SRC/" "$DST/") ;;
        fsync) CMD=("$FSYNC_REPL" push -v --json "$SRC" "$DST") ;;
        fsync-bw20) CMD=("$FSYNC_REPL" push -v --json --bwlimit 20M "$SRC" "$DST") ;;
        fsync:*) read -r -a opts <<< "${c#fsync:}"
                 CMD=("$FSYNC_REPL" push -v --json "${opts[@]}" "$SRC" "$DST") ;;
        *) die "unknown configuration '$c'" ;;
    esac
}

RESULTS=$TMPLOG/results.jsonl
: > "$RESULTS"
bad=0

SHOW_RUN='
import json, sys
r = json.loads(sys.stdin.read())
g = r.get
ov = (" overlap %.1fs: %.0f IOPS p99 %.0fus" % (g("ov_secs"), g("ov_iops"), g("ov_p99_us"))
      if "ov_iops" in r else "")
w = (" wall %.2fs (+sync %.2fs) rc %d" % (g("wall_secs"), g("sync_after_secs"), g("rc"))
     if "wall_secs" in r else "")
a = (" rate_changes %d throttled %.1fs" % (g("rate_changes"), g("throttled_secs"))
     if "rate_changes" in r else "")
print("  %s #%d: %.0f IOPS (r %.0f w %.0f) p50 %.0fus p99 %.0fus psi %.0f%% other-disk-io r %.0f w %.0f MiB%s%s%s"
      % (g("config"), g("run"), g("iops"), g("read_iops"), g("write_iops"), g("p50_us"),
         g("p99_us"), g("psi_pct"), g("other_read_mib"), g("other_write_mib"), w, ov, a))
'

run_one() {   # config run-number
    local c=$1 k=$2 tag
    tag=$(printf '%s' "$c" | tr -c 'A-Za-z0-9_.-' '_')-$k
    local d=$TMPLOG/$tag
    mkdir -p "$d"
    replicator_cmd "$c"
    rm -rf "$DST"
    drop_caches
    sleep 1
    # Pressure sampler (every 250 ms, epoch timestamps) for the diagnosis.
    ( while :; do echo "$EPOCHREALTIME $(psi_some)"; sleep 0.25; done ) > "$d/psi.log" &
    local sampler=$!
    local psi0 sec0 rpid=
    psi0=$(psi_some); sec0=$(sectors)
    if [[ ${#CMD[@]} -gt 0 ]]; then
        (
            s=$EPOCHREALTIME
            rc=0
            "${CMD[@]}" > "$d/stdout" 2> >(while IFS= read -r l; do echo "$EPOCHREALTIME $l"; done > "$d/stderr") || rc=$?
            e=$EPOCHREALTIME
            sync
            f=$EPOCHREALTIME
            echo "$rc $s $e $f" > "$d/times"
        ) &
        rpid=$!
    fi
    fio --name=fg --filename="$FIOFILE" --size="$FIO_SIZE" --rw=randrw --rwmixread=70 \
        --bs=4k --direct=1 --ioengine=psync --iodepth=1 --time_based \
        --runtime="$FIO_RUNTIME" --percentile_list=50:99 --output-format=json \
        --output="$d/fio.json" --write_lat_log="$d/fio" --log_unix_epoch=1 >/dev/null
    local psi1 sec1
    psi1=$(psi_some); sec1=$(sectors)
    [[ -n $rpid ]] && wait "$rpid"
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    local verified=null
    if [[ $c == fsync* ]]; then
        if "$CORPUS" compare "$SRC" "$DST" > "$d/treecmp" 2>&1; then
            verified=true
        else
            verified=false; bad=1
            echo "io-impact: $c run $k: replica differs from source:" >&2
            head -5 "$d/treecmp" >&2
        fi
    fi
    python3 - "$c" "$k" "$d" "$psi0" "$psi1" "${sec0% *}" "${sec1% *}" "${sec0#* }" "${sec1#* }" \
        "$verified" >> "$RESULTS" <<'EOF'
import json, sys, os
c, k, d, psi0, psi1, rd0, rd1, wr0, wr1, verified = sys.argv[1:]
j = json.load(open(f"{d}/fio.json"))["jobs"][0]
r, w = j["read"], j["write"]
pct = lambda x, p: x["clat_ns"].get("percentile", {}).get(p, 0) / 1000
res = {
    "config": c, "run": int(k),
    "read_iops": r["iops"], "write_iops": w["iops"],
    "iops": r["iops"] + w["iops"],
    "p50_us": pct(r, "50.000000"), "p99_us": pct(r, "99.000000"),
    "fio_secs": j["job_runtime"] / 1000,
    "psi_pct": (int(psi1) - int(psi0)) / (j["job_runtime"] * 10),
    # What the disk did during the fio run beyond fio's own I/O: the replicator's reads
    # and writes (including the kernel's writeback of its data).
    "other_read_mib": ((int(rd1) - int(rd0)) * 512 - r["io_bytes"]) / 2**20,
    "other_write_mib": ((int(wr1) - int(wr0)) * 512 - w["io_bytes"]) / 2**20,
    "verified": json.loads(verified),
}
# The completion log: "time_ms, clat_ns, dir(0 read 1 write), bs, ...".
lat = []
for name in ("fio_clat.1.log", "fio_clat.log"):
    p = os.path.join(d, name)
    if os.path.exists(p):
        for line in open(p):
            f = line.split(",")
            lat.append((int(f[0]), int(f[1]), int(f[2])))
        break
t_fio0 = min((t for t, _, _ in lat), default=0)
t_fio1 = max((t for t, _, _ in lat), default=0)
if os.path.exists(f"{d}/times"):
    rc, s, e, f = open(f"{d}/times").read().split()
    res.update(rc=int(rc), wall_secs=float(e) - float(s), sync_after_secs=float(f) - float(e))
    # From when both run (fio needs a few hundred ms to start) to when either ends.
    lo, hi = max(float(s) * 1000, t_fio0), min(float(e) * 1000, t_fio1)
else:
    lo, hi = t_fio0, t_fio1
if os.path.exists(f"{d}/stdout"):
    try:
        rep = json.loads(open(f"{d}/stdout").read())
        res.update(rate_changes=rep["rate_changes"], throttled_secs=rep["throttled_secs"],
                   elapsed_secs=rep["elapsed_secs"])
    except (ValueError, KeyError):
        pass
win = [(t, v, dr) for t, v, dr in lat if lo <= t <= hi]
span = (hi - lo) / 1000
reads = sorted(v for _, v, dr in win if dr == 0)
if span > 0.5 and reads:
    res.update(
        ov_secs=span,
        ov_iops=len(win) / span,
        ov_p50_us=reads[len(reads) // 2] / 1000,
        ov_p99_us=reads[min(len(reads) - 1, int(len(reads) * 0.99))] / 1000,
    )
print(json.dumps(res))
EOF
    # The per-I/O logs are large; keep only the summary files.
    rm -f "$d"/fio_*.log
    tail -n1 "$RESULTS" | python3 -c "$SHOW_RUN"
}

bwlimit_test() {
    local d=$TMPLOG/bwlimit bw=$WORK/bw
    mkdir -p "$d"
    rm -rf "$bw/dst"; mkdir -p "$bw/src"
    if [[ ! -f $bw/src/big.bin ]] || (( $(stat -c %s "$bw/src/big.bin") != BW_FILE_MIB << 20 )); then
        head -c $((BW_FILE_MIB << 20)) /dev/urandom > "$bw/src/big.bin"
    fi
    drop_caches
    "$FSYNC_REPL" push -v --json --bwlimit "$BW_RATE" --no-adaptive "$bw/src" "$bw/dst" \
        > "$d/stdout" 2> "$d/stderr" &
    local pid=$!
    python3 - "$pid" "$bw/dst" "$BW_RATE" "$d/samples.json" <<'EOF'
import glob, json, os, sys, time
pid, dst, rate, out = sys.argv[1:]
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
target = float(rate[:-1]) * units[rate[-1].upper()] if rate[-1].upper() in units else float(rate)
def temp_size():
    for p in glob.glob(os.path.join(dst, ".big.bin.fsync-tmp.*")):
        try:
            return os.stat(p).st_size
        except FileNotFoundError:
            pass
    return None
def io_wchar():
    try:
        for line in open(f"/proc/{pid}/io"):
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        return None
samples = []
t0 = time.monotonic()
nxt = t0
while os.path.exists(f"/proc/{pid}") and time.monotonic() - t0 < 600:
    now = time.monotonic()
    sz, wc = temp_size(), io_wchar()
    if sz is not None:
        samples.append((now - t0, sz, wc))
    nxt += 1.0
    time.sleep(max(0.0, nxt - time.monotonic()))
# Windows between consecutive samples while the temp file grew (drop the first: start-up
# and the initial burst; stop once the file is complete).
total = max((s for _, s, _ in samples), default=0)
wins = []
for (ta, sa, _), (tb, sb, _) in zip(samples, samples[1:]):
    if sb >= total:   # the window in which the copy finished is partial
        break
    wins.append((tb, (sb - sa) / (tb - ta)))
wins = wins[1:]
ok = bool(wins) and all(abs(r / target - 1) <= 0.05 for _, r in wins)
json.dump({"target": target, "windows": wins, "ok": ok, "samples": samples}, open(out, "w"))
print(f"  bwlimit {rate}: {len(wins)} windows after the first, MiB/s: "
      + " ".join(f"{r / 2**20:.2f}" for _, r in wins))
if wins:
    dev = [r / target - 1 for _, r in wins]
    print(f"  worst deviation {min(dev) * 100:+.1f}% / {max(dev) * 100:+.1f}%: "
          f"{'PASS' if ok else 'FAIL'} (all within +-5%)")
else:
    print("  no complete 1 s windows: FAIL")
EOF
    wait "$pid" || { echo "io-impact: bwlimit copy failed" >&2; cat "$d/stderr" >&2; bad=1; }
    cmp -s "$bw/src/big.bin" "$bw/dst/big.bin" || { echo "io-impact: bwlimit copy differs" >&2; bad=1; }
    rm -rf "$bw/dst"
}

# Rounds: every configuration once per round, so slow drifts of a shared (virtual) disk
# hit all configurations alike.
for ((k = 1; k <= RUNS; k++)); do
    echo "io-impact: round $k of $RUNS"
    for c in "${configs[@]}"; do
        [[ $c == bwlimit ]] || run_one "$c" "$k"
    done
done
for c in "${configs[@]}"; do
    if [[ $c == bwlimit ]]; then
        echo "io-impact: --bwlimit $BW_RATE accuracy"
        bwlimit_test
    fi
done
rm -rf "$DST"
cp "$RESULTS" "$LOGS/results.jsonl"

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not rows:
    sys.exit(0)
order, by = [], {}
for r in rows:
    if r["config"] not in by:
        order.append(r["config"]); by[r["config"]] = []
    by[r["config"]].append(r)
def med(c, key):
    v = [r[key] for r in by.get(c, []) if key in r]
    return statistics.median(v) if v else None
f = lambda x, fmt: "-" if x is None else fmt.format(x)
print()
print("| configuration | total IOPS | read IOPS | write IOPS | read p50 µs | read p99 µs "
      "| copy wall s | sync after s | IOPS while copying | read p99 while copying µs "
      "| PSI some % | other disk reads / writes MiB in fio run | rate changes |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in order:
    print(f"| {c} | {f(med(c,'iops'),'{:.0f}')} | {f(med(c,'read_iops'),'{:.0f}')} "
          f"| {f(med(c,'write_iops'),'{:.0f}')} | {f(med(c,'p50_us'),'{:.0f}')} "
          f"| {f(med(c,'p99_us'),'{:.0f}')} | {f(med(c,'wall_secs'),'{:.2f}')} "
          f"| {f(med(c,'sync_after_secs'),'{:.2f}')} | {f(med(c,'ov_iops'),'{:.0f}')} "
          f"| {f(med(c,'ov_p99_us'),'{:.0f}')} | {f(med(c,'psi_pct'),'{:.0f}')} "
          f"| {f(med(c,'other_read_mib'),'{:.0f}')} / {f(med(c,'other_write_mib'),'{:.0f}')} "
          f"| {f(med(c,'rate_changes'),'{:.0f}')} |")
# Paired ratios: each run against the idle run of the same round (the disk's speed drifts
# between rounds; within a round the configurations ran back to back).
idle_by_run = {r["run"]: r for r in by.get("idle", [])}
def paired(c, key, ref):
    v = [r[key] / idle_by_run[r["run"]][ref] for r in by.get(c, [])
         if key in r and r["run"] in idle_by_run and idle_by_run[r["run"]].get(ref)]
    return statistics.median(v) if v else None
if idle_by_run:
    print()
    print("| configuration | IOPS / idle (same round) | read p99 / idle | IOPS while copying / idle "
          "| read p99 while copying / idle |")
    print("|---|---:|---:|---:|---:|")
    for c in order:
        if c == "idle":
            continue
        print(f"| {c} | {f(paired(c,'iops','iops'),'{:.2f}')} | {f(paired(c,'p99_us','p99_us'),'{:.2f}')} "
              f"| {f(paired(c,'ov_iops','iops'),'{:.2f}')} | {f(paired(c,'ov_p99_us','p99_us'),'{:.2f}')} |")
if "idle" in by and "fsync" in by:
    print()
    ip99, iiops = med("idle", "p99_us"), med("idle", "iops")
    for label, p99, iops in (("whole fio run", med("fsync", "p99_us"), med("fsync", "iops")),
                             ("while copying", med("fsync", "ov_p99_us"), med("fsync", "ov_iops"))):
        if p99 is not None:
            print(f"target read p99 <= 1.15 x idle ({label}): {p99:.0f} / {ip99:.0f} = "
                  f"{p99 / ip99:.2f}x  {'PASS' if p99 <= 1.15 * ip99 else 'FAIL'}")
        if iops is not None:
            print(f"target IOPS >= 95% of idle ({label}): {iops:.0f} / {iiops:.0f} = "
                  f"{iops / iiops * 100:.0f}%  {'PASS' if iops >= 0.95 * iiops else 'FAIL'}")
    pi, pp = paired("fsync", "iops", "iops"), paired("fsync", "p99_us", "p99_us")
    if pi is not None:
        print(f"paired (median of per-round ratios): IOPS {pi * 100:.0f}% of idle "
              f"{'PASS' if pi >= 0.95 else 'FAIL'}, read p99 {pp:.2f}x idle "
              f"{'PASS' if pp <= 1.15 else 'FAIL'}")
    if "rsync-ionice" in by:
        w, wr = med("fsync", "wall_secs"), med("rsync-ionice", "wall_secs")
        print(f"target wall <= 1.5 x ionice'd rsync: {w:.2f} / {wr:.2f} s = {w / wr:.2f}x  "
              f"{'PASS' if w <= 1.5 * wr else 'FAIL'}")
EOF
exit $bad
