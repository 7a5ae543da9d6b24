#!/usr/bin/env bash
# Watch-mode benchmark: latency of single changes, a burst against a one-off push, and
# the idle cost of watching the corpus.
#
#   benches/watch.sh [latency] [burst] [idle] [restart]  (default: all four)
#
# Scenarios (every tree on $SCRATCH, /dev/shm by default)
#   latency  `fsync-repl watch SRC DEST` with default settings runs on a small tree; 100
#            files are rewritten one at a time (a pause between changes, so each is its
#            own batch). For each, the time from the writer's close() to the moment DEST
#            holds an identical copy (polled every millisecond).
#                                                     targets: p50 <= 0.5 s, p99 <= 1.5 s
#   burst    10,000 new files (100 directories x 100 files of 1 KiB) written into a
#            watched SRC as fast as python can; the time from the last file's close until
#            DEST holds all of them (and, for reference, from the first create), against
#            hyperfine's mean of a one-off `fsync-repl push` of the same files into an
#            empty DEST. Both replicas are checked with corpus compare.
#                                                     target: burst <= 2 x push
#   idle     the corpus (examples/corpus.rs make: ~16.6k files) watched; after the initial
#            push, CPU time (utime+stime from /proc) over IDLE_SECS of no changes, and
#            the resident memory (VmRSS, VmHWM).      target: CPU <= 1% of one core
#   restart  the corpus watched, then stopped with SIGTERM; 10 files rewritten
#            while stopped; the watch started again. The time from the start until the
#            first batch is done (state file), resuming after the clean stop against
#            --full-start (a full push), alternating, RESTARTS times each (medians).
#            With COLD=1 (root) the page cache is dropped before every start, as after
#            a reboot; use SCRATCH on a disk for that. With REMOTE=1, DEST is
#            `host:path` through tests/support/fake-rsh (pipes to a local `serve`, no
#            ssh), so the full push pulls DEST's listing through the protocol.
#                                                     no target (for the README's claim)
#
# Environment (all optional)
#   CORPUS       the corpus tool [built from examples/corpus.rs]
#   SCRATCH      parent of the scratch directory (use tmpfs)   [/dev/shm]
#   FSYNC_REPL   binary to measure [REPO/target/release/fsync-repl after
#                `cargo build --release`]; copied to the scratch dir first
#   CHANGES      single-file changes in the latency scenario   [100]
#   BURST_RUNS   burst repetitions (the median is reported)    [3]
#   IDLE_SECS    idle measurement window                       [60]
#   RESTARTS     restarts of each kind                          [7]
#   COLD=1       restart: drop the page cache before each start
#   REMOTE=1     restart: DEST through the protocol (see above)
#   CORPUS_ARGS  restart: options of `corpus make` for a bigger tree, e.g.
#                "--users 40 --small 5000 --medium 0 --large-mib 0" (200k files)
#   KEEP=1       keep the scratch directory
#
# Tools: bash, python3, hyperfine.
# Exit status: 0 when every replica is correct (missed targets show as FAIL), 1 otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRATCH=${SCRATCH:-/dev/shm}
CHANGES=${CHANGES:-100}
BURST_RUNS=${BURST_RUNS:-3}
IDLE_SECS=${IDLE_SECS:-60}
RESTARTS=${RESTARTS:-7}
KEEP=${KEEP:-0}

die() { echo "watch.sh: $*" >&2; exit 1; }

scenarios=("$@")
[[ ${#scenarios[@]} -eq 0 ]] && scenarios=(latency burst idle restart)
for s in "${scenarios[@]}"; do
    case $s in latency|burst|idle|restart) ;; *) die "unknown scenario '$s' (latency, burst, idle, restart)";; esac
done
command -v hyperfine >/dev/null || die "hyperfine is needed"
command -v python3 >/dev/null || die "python3 is needed"

if [[ -z ${FSYNC_REPL:-} ]]; then
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
    FSYNC_REPL=$REPO/target/release/fsync-repl
fi
. "$REPO/benches/corpus.sh"
W=$(mktemp -d "$SCRATCH/fsync-repl-watch-bench.XXXXXX")
WATCHER=
cleanup() {
    if [[ -n $WATCHER ]]; then kill "$WATCHER" 2>/dev/null || true; wait "$WATCHER" 2>/dev/null || true; fi
    if [[ $KEEP == 1 ]]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
cp "$FSYNC_REPL" "$W/fsync-repl"
BIN=$W/fsync-repl
echo "binary: $("$BIN" --version), commit $(cd "$REPO" && git rev-parse --short HEAD)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# The measuring helper: latency and burst loops, idle sampling, convergence polling.
cat >"$W/helper.py" <<'PY'
import os, sys, time, statistics

def wait_file(path, data, deadline):
    while time.monotonic() < deadline:
        try:
            with open(path, 'rb') as f:
                if f.read() == data:
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.001)
    raise SystemExit(f"timeout waiting for {path}")

def count_files(root):
    n = 0
    for d, _, files in os.walk(root):
        n += len(files)
    return n

def make_burst(root):
    for d in range(100):
        os.makedirs(os.path.join(root, f"b{d:03}"), exist_ok=True)
        for f in range(100):
            with open(os.path.join(root, f"b{d:03}", f"f{f:03}"), 'wb') as fh:
                fh.write(os.urandom(1024))

cmd = sys.argv[1]
if cmd == 'latency':
    src, dst, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
    lat = []
    for i in range(n):
        rel = f"d{i % 10}/f{i % 25}"
        data = (f"change {i} " * 50).encode()
        p = os.path.join(src, rel)
        with open(p, 'wb') as f:
            f.write(data)
        t0 = time.monotonic()  # after close()
        t1 = wait_file(os.path.join(dst, rel), data, t0 + 60)
        lat.append(t1 - t0)
        time.sleep(0.3)
    lat.sort()
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    print(f"{p50:.4f} {p99:.4f} {lat[0]:.4f} {lat[-1]:.4f}")
elif cmd == 'make-burst':
    make_burst(sys.argv[2])
elif cmd == 'burst':
    src, dst, pre = sys.argv[2], sys.argv[3], int(sys.argv[4])
    t0 = time.monotonic()
    make_burst(src)
    t1 = time.monotonic()  # the last file closed
    want = pre + 10000
    while count_files(dst) < want:
        if time.monotonic() - t0 > 600:
            raise SystemExit("burst did not converge")
        time.sleep(0.05)
    t2 = time.monotonic()
    print(f"{t2 - t1:.4f} {t2 - t0:.4f}")
elif cmd == 'wait-count':
    dst, want = sys.argv[2], int(sys.argv[3])
    t0 = time.monotonic()
    while count_files(dst) < want:
        if time.monotonic() - t0 > 900:
            raise SystemExit("initial push did not converge")
        time.sleep(0.2)
elif cmd == 'first-batch':
    # Starts a watch and times it until the state file records a successful batch.
    import json, subprocess
    binary, src, dst, state, extra = sys.argv[2:7]
    t0 = time.monotonic()
    p = subprocess.Popen([binary, 'watch', '--state-file', state] + extra.split() + [src, dst],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            st = json.load(open(state))
            if st.get('pid') == p.pid and st.get('last_success'):
                break
        except (OSError, ValueError):
            pass
        if p.poll() is not None or time.monotonic() - t0 > 600:
            raise SystemExit("the watch did not finish its first batch")
        time.sleep(0.002)
    t1 = time.monotonic()
    p.terminate()
    if p.wait() != 0:
        raise SystemExit("the watch did not stop cleanly")
    print(f"{t1 - t0:.4f}")
elif cmd == 'rewrite':
    src, n, tag = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    done = 0
    for d, _, files in sorted(os.walk(src)):
        for f in sorted(files):
            if done == n:
                break
            with open(os.path.join(d, f), 'ab') as fh:
                fh.write(tag.encode())
            done += 1
elif cmd == 'idle':
    pid, secs = int(sys.argv[2]), float(sys.argv[3])
    tck = os.sysconf('SC_CLK_TCK')
    def cpu():
        f = open(f"/proc/{pid}/stat").read().rsplit(')', 1)[1].split()
        return (int(f[11]) + int(f[12])) / tck
    c0, t0 = cpu(), time.monotonic()
    time.sleep(secs)
    c1, t1 = cpu(), time.monotonic()
    st = dict(l.split(':', 1) for l in open(f"/proc/{pid}/status") if ':' in l)
    kib = lambda k: st[k].split()[0] + "kB"
    print(f"{100 * (c1 - c0) / (t1 - t0):.3f} {kib('VmRSS')} {kib('VmHWM')}")
PY
H="python3 $W/helper.py"

start_watch() { # SRC DEST LOG
    "$BIN" watch --state-file "$W/state.json" "$1" "$2" >"$3" 2>&1 &
    WATCHER=$!
}
stop_watch() {
    kill -TERM "$WATCHER"; wait "$WATCHER" || true; WATCHER=
}
check() { # SRC DEST WHAT
    "$CORPUS" compare "$1" "$2" >/dev/null || die "$3: DEST differs from SRC"
}
verdict() { # VALUE <= LIMIT
    python3 -c "import sys; print('ok' if float(sys.argv[1]) <= float(sys.argv[2]) else 'FAIL')" "$1" "$2"
}
SUMMARY=()

for s in "${scenarios[@]}"; do
case $s in
latency)
    src=$W/lat-src dst=$W/lat-dst
    for d in $(seq 0 9); do mkdir -p "$src/d$d"; for f in $(seq 0 24); do echo init >"$src/d$d/f$f"; done; done
    start_watch "$src" "$dst" "$W/latency.log"
    $H wait-count "$dst" 250
    read -r p50 p99 lo hi < <($H latency "$src" "$dst" "$CHANGES")
    stop_watch
    check "$src" "$dst" latency
    SUMMARY+=("latency ($CHANGES single-file changes): p50 ${p50} s [$(verdict "$p50" 0.5)], p99 ${p99} s [$(verdict "$p99" 1.5)], min ${lo} s, max ${hi} s")
    ;;
burst)
    # The one-off push of the same 10,000 files into an empty DEST.
    $H make-burst "$W/burst-ref"
    hyperfine --runs 5 --warmup 1 --export-json "$W/push.json" \
        --prepare "rm -rf $W/push-dst" "$BIN push $W/burst-ref $W/push-dst" >"$W/push.out"
    check "$W/burst-ref" "$W/push-dst" "burst push"
    push=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][0]['mean'])" "$W/push.json")
    times=() totals=()
    for r in $(seq 1 "$BURST_RUNS"); do
        src=$W/burst-src-$r dst=$W/burst-dst-$r
        mkdir -p "$src"; echo seed >"$src/seed"
        start_watch "$src" "$dst" "$W/burst-$r.log"
        $H wait-count "$dst" 1
        read -r after total < <($H burst "$src" "$dst" 1)
        times+=("$after") totals+=("$total")
        stop_watch
        check "$src" "$dst" "burst run $r"
        rm -rf "$src" "$dst"
    done
    med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
    burst=$(med "${times[@]}") total=$(med "${totals[@]}")
    ratio=$(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$burst" "$push")
    ratio_total=$(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$total" "$push")
    SUMMARY+=("burst of 10,000 files: DEST complete ${burst} s after the last file closed (median of ${times[*]}), one-off push ${push:0:6} s: ratio ${ratio} [$(verdict "$ratio" 2)]; from the first create ${total} s (writing the files included), ratio ${ratio_total}")
    ;;
idle)
    src=$W/corpus dst=$W/corpus-dst
    "$CORPUS" make "$src" >/dev/null
    files=$(find "$src" -type f | wc -l); dirs=$(find "$src" -type d | wc -l)
    start_watch "$src" "$dst" "$W/idle.log"
    $H wait-count "$dst" "$files"
    sleep 2
    read -r cpu rss hwm < <($H idle "$WATCHER" "$IDLE_SECS")
    stop_watch
    check "$src" "$dst" idle
    SUMMARY+=("idle, corpus watched ($files files, $dirs directories): CPU ${cpu}% of one core over ${IDLE_SECS} s [$(verdict "$cpu" 1)], VmRSS ${rss}, VmHWM ${hwm} (includes the initial push)")
    ;;
restart)
    src=$W/restart-src dst=$W/restart-dst
    # shellcheck disable=SC2086  # CORPUS_ARGS is a list of options
    "$CORPUS" make ${CORPUS_ARGS:-} "$src" >/dev/null
    files=$(find "$src" -type f | wc -l)
    # The first watch does the initial push; each run below ends with a clean stop, so
    # the next start may resume.
    target=$dst via=""
    if [[ ${REMOTE:-0} == 1 ]]; then
        target=testhost:$dst via="--rsh $REPO/tests/support/fake-rsh --remote-bin $BIN"
    fi
    $H first-batch "$BIN" "$src" "$target" "$W/restart.json" "$via" >/dev/null
    resumed=() full=()
    for r in $(seq 1 "$RESTARTS"); do
        for kind in resume full; do
            $H rewrite "$src" 10 "$kind$r"
            extra=$via; [[ $kind == full ]] && extra="$via --full-start"
            if [[ ${COLD:-0} == 1 ]]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
            t=$($H first-batch "$BIN" "$src" "$target" "$W/restart.json" "$extra")
            if [[ $kind == resume ]]; then resumed+=("$t"); else full+=("$t"); fi
        done
    done
    check "$src" "$dst" restart
    med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
    rm_=$(med "${resumed[@]}") fm=$(med "${full[@]}")
    ratio=$(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$rm_" "$fm")
    cache="warm cache"; [[ ${COLD:-0} == 1 ]] && cache="cold cache"
    [[ ${REMOTE:-0} == 1 ]] && cache="$cache, DEST through the protocol"
    SUMMARY+=("restart after a clean stop, corpus ($files files) on $(df --output=fstype "$W" | tail -1), $cache, 10 files changed meanwhile: first batch done ${rm_} s after the start when resuming (${resumed[*]}), ${fm} s with --full-start (${full[*]}); ratio ${ratio}")
    ;;
esac
done

echo
echo "== summary =="
printf '%s\n' "${SUMMARY[@]}"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
