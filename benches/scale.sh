#!/usr/bin/env bash
# Production shape: many files of equal size, and a million entries.
#
#   benches/scale.sh [samesize] [million]            (default: both)
#
#   samesize  100,000 files of 100 bytes (100 dirs x 1,000), 4,000 of them missing from
#             DEST; push --delete vs rsync -aH --delete          goal: ratio <= 1.0
#   million   HOMES x 100 dirs x 50 small files (HOMES=200: 1,020,201 entries, 7 sizes):
#             initial copy (goal <= 0.5), no-change (goal <= 0.3) and 240,000 files
#             missing from DEST (reported), with the peak RSS of each tool (wait4, from
#             GNU time; goal: fsync-repl <= 96 MiB)
#
# Trees live on SCRATCH (tmpfs: this measures CPU and memory, not a disk); the million
# tree needs ~3.1M inodes for SRC and two replicas, so its tmpfs is mounted with enough
# (root) when SCRATCH has too few. Each timing is one hyperfine invocation holding both
# tools, each tool's DEST reset by its own --prepare. Every replica is compared with its source at the end.
#
# Environment: SCRATCH [/dev/shm], RUNS [3], HOMES [200], FSYNC_REPL
# [target/release/fsync-repl]. Tools: hyperfine, rsync, python3, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."

SCRATCH=${SCRATCH:-/dev/shm}
RUNS=${RUNS:-3}
HOMES=${HOMES:-200}
BIN=${FSYNC_REPL:-target/release/fsync-repl}
[ -x "$BIN" ] || cargo build --release --quiet
BIN=$(realpath "$BIN")
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(samesize million)

W=$(mktemp -d "$SCRATCH/fsync-repl-scale.XXXXXX")
cleanup() {
    mountpoint -q "$W/m" 2>/dev/null && umount "$W/m"
    rm -rf "$W"
}
trap cleanup EXIT

ratio() { # JSON -> "fsync-repl median / rsync median = ratio"
    python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
a, b = r[0]["median"], r[1]["median"]
print(f"fsync-repl {a:.3f} s, rsync {b:.3f} s (medians), ratio {a / b:.3f}")
EOF
}

peak() { # COMMAND... -> peak RSS in MiB (GNU time)
    /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1 | awk '{printf "%.1f", $1 / 1024}'
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
    local d="$W/same"
    mkdir -p "$d"
    python3 - "$d/src" <<'EOF'
import os, random, sys
rng = random.Random(1)
for i in range(100):
    p = os.path.join(sys.argv[1], f"d{i:03}")
    os.makedirs(p)
    for f in range(1000):
        with open(os.path.join(p, f"f{f:04}"), "wb") as fh:
            fh.write(rng.randbytes(100))
EOF
    cp -a "$d/src" "$d/base"
    python3 - "$d/base" <<'EOF'
import os, sys
for i in range(100):
    for f in range(0, 1000, 25):
        os.remove(os.path.join(sys.argv[1], f"d{i:03}", f"f{f:04}"))
EOF
    hyperfine --runs "$RUNS" --export-json "$W/same.json" \
        --prepare "rm -rf $d/a && cp -a $d/base $d/a" \
        --prepare "rm -rf $d/b && cp -a $d/base $d/b" \
        "$BIN push -q --delete $d/src $d/a" "rsync -aH --delete $d/src/ $d/b/" >/dev/null
    echo "samesize, 100,000 x 100 B, 4,000 missing: $(ratio "$W/same.json")"
    # Checked on runs of their own, whatever order hyperfine ran its preparations in.
    rm -rf "$d/a" "$d/b" && cp -a "$d/base" "$d/a" && cp -a "$d/base" "$d/b"
    "$BIN" push -q --delete "$d/src" "$d/a"
    rsync -aH --delete "$d/src/" "$d/b/"
    same "$d/src" "$d/a"
    same "$d/src" "$d/b"
    rm -rf "$d"
}

million() {
    local d="$W/m"
    mkdir -p "$d"
    local need=$((HOMES * 5100 * 3 + 1000))
    if [ "$(df --output=iavail "$SCRATCH" | tail -1)" -lt "$need" ]; then
        mount -t tmpfs -o "size=8g,nr_inodes=$((need + 100000))" tmpfs "$d"
    fi
    python3 - "$d/src" "$HOMES" <<'EOF'
import os, sys
root, homes = sys.argv[1], int(sys.argv[2])
data = [bytes([65 + i % 26]) * (i % 7 * 100 + 10) for i in range(50)]
for h in range(homes):
    for k in range(100):
        p = os.path.join(root, f"home{h:03}", f"d{k:02}")
        os.makedirs(p)
        for f in range(50):
            with open(os.path.join(p, f"f{f:02}"), "wb") as fh:
                fh.write(data[f])
EOF
    local entries; entries=$(find "$d/src" | wc -l)
    hyperfine --runs 1 --export-json "$W/m-initial.json" \
        --prepare "rm -rf $d/a" --prepare "rm -rf $d/b" \
        "$BIN push -q $d/src $d/a" "rsync -aH $d/src/ $d/b/" >/dev/null
    echo "million ($entries entries), initial copy: $(ratio "$W/m-initial.json")"
    hyperfine --runs "$RUNS" --export-json "$W/m-nochange.json" \
        "$BIN push -q --delete $d/src $d/a" "rsync -aH --delete $d/src/ $d/b/" >/dev/null
    echo "million, no-change: $(ratio "$W/m-nochange.json")"
    echo "million, no-change peak RSS: fsync-repl $(peak "$BIN" push -q --delete "$d/src" "$d/a") MiB, rsync $(peak rsync -aH --delete "$d/src/" "$d/b/") MiB (largest process)"
    same "$d/src" "$d/a"
    # 48 files of every fourth directory gone from both replicas: 240,000 at HOMES=200.
    python3 - "$d/a" "$d/b" "$HOMES" <<'EOF'
import os, sys
a, b, homes = sys.argv[1], sys.argv[2], int(sys.argv[3])
for h in range(homes):
    for k in range(0, 100, 4):
        for f in range(48):
            for r in (a, b):
                os.remove(os.path.join(r, f"home{h:03}", f"d{k:02}", f"f{f:02}"))
EOF
    hyperfine --runs 1 --export-json "$W/m-missing.json" \
        "$BIN push -q --delete $d/src $d/a" "rsync -aH --delete $d/src/ $d/b/" >/dev/null
    echo "million, files missing from DEST: $(ratio "$W/m-missing.json")"
    same "$d/src" "$d/a"
    same "$d/src" "$d/b"
}

for s in "${scenarios[@]}"; do
    "$s"
done
