#!/usr/bin/env bash
# Production shape: many files of equal size, millions of entries, many homes.
#
#   benches/scale.sh [samesize] [grow] [stale] [homes]      (default: all four)
#
#   samesize  100,000 files of 100 bytes (100 dirs x 1,000), 4,000 of them missing from
#             DEST; push --delete vs rsync -aH --delete              goal: ratio <= 1.0
#   grow      initial copy and no-change at 100k, 1M (7 sizes) and 3M entries (empty
#             files: the inodes, not the bytes, are the load), each with the peak RSS of
#             both tools (GNU time; for rsync its largest process). Goals at 1M: initial
#             <= 0.5, no-change <= 0.3, fsync-repl <= 96 MiB; 1M -> 3M at most doubles.
#   stale     a 300,000-file subtree in DEST that SRC no longer has, push --delete on the
#             1M tree (empty files) vs rsync -aH --delete            goal: ratio <= 0.6
#   homes     5,000 top-level directories with a few files each: initial and no-change
#             (no per-home fixed cost; reported)
#
# Trees come from the project's generator (`examples/corpus.rs grid`) and live on a tmpfs
# mounted here with room for their inodes (one per entry; root needed): this measures
# CPU and memory, not a disk. CPU time (user + system, all threads and processes) is
# reported beside wall time: on a loaded machine the scheduler shares the cores per
# thread, which favours rsync's three processes in wall time. Every timing is RUNS rounds,
# medians reported (initial copies alternate the tools; no-change runs keep one replica at
# a time, which is what bounds the tmpfs: ~4 GiB per million small files); every replica
# is compared with its source.
#
# On a virtual machine whose free memory goes back to the host (virtio free page
# reporting), the first write to each page the guest gets back is a host fault: `dd` into
# a tmpfs wrote 314 MB/s into such pages against 1.5 GB/s into pages just freed. An
# initial copy of small files writes one fresh page per file, both tools alike; on such a
# machine it was about half of fsync-repl's CPU time in the 1M initial copy (32 s as the
# pages came, 17 s when each run followed a 10 GiB write and delete).
#
# Environment: SCRATCH [/dev/shm], RUNS [3], FSYNC_REPL [target/release/fsync-repl],
# GROW ["100k 1M 3M"]: the sizes grow runs.
# Tools: rsync, GNU time, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

SCRATCH=${SCRATCH:-/dev/shm}
RUNS=${RUNS:-3}
GROW=${GROW:-100k 1M 3M}
BIN=${FSYNC_REPL:-target/release/fsync-repl}
[ -x "$BIN" ] || cargo build --release --quiet
cargo build --release --quiet --example corpus
GEN=$(realpath target/release/examples/corpus)
BIN=$(realpath "$BIN")
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(samesize grow stale homes)

W=$(mktemp -d "$SCRATCH/fsync-repl-scale.XXXXXX")
cleanup() {
    mountpoint -q "$W/t" 2>/dev/null && umount "$W/t"
    rm -rf "$W"
}
trap cleanup EXIT

fs() { # INODES: a fresh tmpfs at $W/t with room for that many inodes
    mountpoint -q "$W/t" 2>/dev/null && umount "$W/t"
    mkdir -p "$W/t"
    mount -t tmpfs -o "size=12g,nr_inodes=$(($1 + 100000))" tmpfs "$W/t"
}

grid() { # DIR HOMES DIRS FILES [more generator options]
    local dir=$1 h=$2 d=$3 f=$4
    shift 4
    "$GEN" grid "$dir" --homes "$h" --dirs "$d" --files "$f" "$@" 2>/dev/null
}

run() { # LOGFILE COMMAND...: appends "seconds peak-KiB cpu-seconds" of one run
    local log=$1
    shift
    /usr/bin/time -o "$log.one" -f "%e %M %U %S" "$@" >/dev/null
    cat "$log.one" >>"$log"
}

med() { # LOGFILE COLUMN -> median
    awk '{print $1, $2, $3 + $4}' "$1" | sort -n -k"$2" |
        awk -v c="$2" '{v[NR]=$c} END {print v[int((NR+1)/2)]}'
}

report() { # LABEL: compares $W/f.log and $W/r.log, then clears them
    python3 - "$1" "$(med "$W/f.log" 1)" "$(med "$W/r.log" 1)" \
        "$(med "$W/f.log" 2)" "$(med "$W/r.log" 2)" \
        "$(med "$W/f.log" 3)" "$(med "$W/r.log" 3)" <<'EOF'
import sys
label, ft, rt, fm, rm, fc, rc = sys.argv[1], *map(float, sys.argv[2:])
print(f"{label}: fsync-repl {ft:.2f} s, rsync {rt:.2f} s, ratio {ft / max(rt, 0.001):.3f}; "
      f"CPU {fc:.2f} s vs {rc:.2f} s, ratio {fc / max(rc, 0.001):.3f}; "
      f"peak RSS fsync-repl {fm / 1024:.1f} MiB, rsync {rm / 1024:.1f} MiB")
EOF
    rm -f "$W/f.log" "$W/r.log"
}

same() { # SRC DEST: fails the script when the replica differs (directory times aside)
    local diff
    diff=$(rsync -a -H --delete --dry-run --itemize-changes --exclude=/.fsync-repl "$1/" "$2/" \
        | grep -v '^\.d\.\.t' || true)
    if [ -n "$diff" ]; then
        echo "replica $2 differs from $1:" >&2
        echo "$diff" | head -5 >&2
        exit 1
    fi
}

samesize() {
    fs 400000
    local d="$W/t"
    grid "$d/src" 1 100 1000 --sizes 1
    cp -a "$d/src" "$d/base"
    python3 - "$d/base/home0000" <<'EOF'
import os, sys
for i in range(100):
    for f in range(0, 1000, 25):
        os.remove(os.path.join(sys.argv[1], f"d{i:03}", f"f{f:03}"))
EOF
    for _ in $(seq "$RUNS"); do
        rm -rf "$d/a" "$d/b" && cp -a "$d/base" "$d/a" && cp -a "$d/base" "$d/b"
        run "$W/f.log" "$BIN" push -q --delete "$d/src" "$d/a"
        run "$W/r.log" rsync -aH --delete "$d/src/" "$d/b/"
    done
    report "samesize, 100,000 x 100 B, 4,000 missing"
    same "$d/src" "$d/a"
    same "$d/src" "$d/b"
}

pair() { # LABEL SRC: initial copy and no-change, both tools (one replica at a time)
    local label=$1 src=$2 d="$W/t"
    for _ in $(seq "$RUNS"); do
        rm -rf "$d/a" && run "$W/f.log" "$BIN" push -q "$src" "$d/a"
        rm -rf "$d/a" && run "$W/r.log" rsync -aH "$src/" "$d/a/"
    done
    report "$label, initial copy"
    rm -rf "$d/a" && "$BIN" push -q "$src" "$d/a"
    for _ in $(seq "$RUNS"); do
        run "$W/f.log" "$BIN" push -q --delete "$src" "$d/a"
    done
    same "$src" "$d/a"
    rm -rf "$d/a" && rsync -aH "$src/" "$d/a/"
    for _ in $(seq "$RUNS"); do
        run "$W/r.log" rsync -aH --delete "$src/" "$d/a/"
    done
    same "$src" "$d/a"
    report "$label, no-change"
    rm -rf "$d/a"
}

grow() {
    local size label
    for size in $GROW; do
        label=$size
        case $size in
        100k) fs 350000 && grid "$W/t/src" 20 100 50 ;;
        1M) fs 2200000 && grid "$W/t/src" 200 100 50 ;;
        3M) fs 6300000 && grid "$W/t/src" 600 100 50 --empty && label="3M empty files" ;;
        *) echo "GROW: unknown size $size (100k, 1M, 3M)" >&2 && exit 2 ;;
        esac
        pair "$label ($(find "$W/t/src" | wc -l) entries)" "$W/t/src"
    done
}

stale() {
    fs 3800000
    local d="$W/t"
    grid "$d/src" 200 100 50 --empty
    "$BIN" push -q "$d/src" "$d/a"
    rsync -aH "$d/src/" "$d/b/"
    for _ in $(seq "$RUNS"); do
        for r in a b; do
            rm -rf "$d/$r/stale"
            grid "$d/$r/stale" 60 100 49 --empty
        done
        run "$W/f.log" "$BIN" push -q --delete "$d/src" "$d/a"
        run "$W/r.log" rsync -aH --delete "$d/src/" "$d/b/"
    done
    report "stale subtree of 300,000 files deleted from the 1M tree"
    same "$d/src" "$d/a"
    same "$d/src" "$d/b"
}

homes() {
    fs 200000
    grid "$W/t/src" 5000 1 4
    pair "5,000 homes x 4 files" "$W/t/src"
}

for s in "${scenarios[@]}"; do
    "$s"
done
