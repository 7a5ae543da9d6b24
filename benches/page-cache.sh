#!/usr/bin/env bash
# Does a replication run evict the users' cached files?
#
#   benches/page-cache.sh            (as root: needs a cgroup-v1 memory controller)
#
# In a memory cgroup limited to LIMIT that also holds a hot set (HOT_FILES files of
# HOT_MIB MiB, read twice, as a user's working set would be), each replicator copies a
# corpus (CORPUS_FILES files, CORPUS_MB in all) from the root disk to the root disk.
# Afterwards `fincore` tells how much of the hot set is still cached. One round per
# replicator, in this order, each from a cold cache:
#
#   fsync-repl push SRC DEST           (the default: leave the cache as found)
#   fsync-repl push --keep-cache       (the old behaviour, for the cost of fadvise)
#   rsync -a                           (the anchor)
#   nocache rsync -a                   (the anchor users reach for; Debian `nocache`)
#   fsync-repl push SRC host:DEST      (remote DEST: the far side runs outside the cgroup,
#   rsync -a SRC host:DEST              as on another machine; a local stand-in shell)
#
# Goal: fsync-repl keeps >= 98% of the hot set cached, and its copy takes at most 1.05x
# the time of --keep-cache. Prints one table; exit 0 unless a step failed.
#
# Environment: LIMIT [1700M], HOT_FILES [15], HOT_MIB [100], CORPUS_FILES [16000],
# CORPUS_MB [476], WORK [/var/tmp/fsync-repl-page-cache], FSYNC_REPL
# [target/release/fsync-repl], KEEP=1 keeps WORK.
set -euo pipefail
cd "$(dirname "$0")/.."

LIMIT=${LIMIT:-1700M}
HOT_FILES=${HOT_FILES:-15}
HOT_MIB=${HOT_MIB:-100}
CORPUS_FILES=${CORPUS_FILES:-16000}
CORPUS_MB=${CORPUS_MB:-476}
WORK=${WORK:-/var/tmp/fsync-repl-page-cache}
BIN=${FSYNC_REPL:-target/release/fsync-repl}
CG=/sys/fs/cgroup/memory/fsync-repl-bench

[ "$(id -u)" = 0 ] || { echo "page-cache.sh: needs root (cgroup, drop_caches)" >&2; exit 2; }
[ -d /sys/fs/cgroup/memory ] || { echo "page-cache.sh: no cgroup-v1 memory controller" >&2; exit 2; }
command -v fincore >/dev/null || { echo "page-cache.sh: needs fincore (util-linux)" >&2; exit 2; }
command -v nocache >/dev/null || { echo "page-cache.sh: needs nocache (apt-get install nocache)" >&2; exit 2; }
[ -x "$BIN" ] || cargo build --release --quiet
BIN=$(realpath "$BIN")

mkdir -p "$WORK"
WORK=$(realpath "$WORK")
cleanup() {
    [ -d "$CG" ] && { cat "$CG/cgroup.procs" 2>/dev/null | while read -r p; do echo "$p" > /sys/fs/cgroup/memory/cgroup.procs 2>/dev/null || true; done; rmdir "$CG" 2>/dev/null || true; }
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

# The hot set and the corpus (deterministic sizes, random content).
if [ ! -f "$WORK/made" ]; then
    mkdir -p "$WORK/hot" "$WORK/src"
    for i in $(seq 1 "$HOT_FILES"); do
        head -c "$((HOT_MIB << 20))" /dev/urandom > "$WORK/hot/h$i"
    done
    python3 - "$WORK/src" "$CORPUS_FILES" "$CORPUS_MB" <<'EOF'
import os, random, sys
root, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
# Mostly small files, a few large ones: sizes from a log-uniform spread scaled to MB.
raw = [2 ** rng.uniform(8, 24) for _ in range(n)]
scale = mb * 2**20 / sum(raw)
block = os.urandom(1 << 20)
for i, r in enumerate(raw):
    d = os.path.join(root, f"user{i % 8}", f"dir{(i // 8) % 50}")
    os.makedirs(d, exist_ok=True)
    size = max(1, int(r * scale))
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        while size > 0:
            k = min(size, len(block))
            f.write(block[:k])
            size -= k
EOF
    touch "$WORK/made"
fi
sync

# A stand-in remote shell whose far side leaves the cgroup, as on another machine.
cat > "$WORK/rsh" <<'EOF'
#!/bin/sh
# Stands in for ssh (fsync-repl passes OPTIONS HOST -- COMMAND, rsync HOST COMMAND):
# runs COMMAND here, outside the benchmark's memory cgroup.
case " $* " in
    *" -- "*) while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done ;;
esac
shift
echo $$ > /sys/fs/cgroup/memory/cgroup.procs
exec sh -c "$*"
EOF
chmod +x "$WORK/rsh"

mkdir -p "$CG"
echo "$LIMIT" > "$CG/memory.limit_in_bytes"

hot_cached() { # MiB of the hot set in the cache
    fincore --bytes --noheadings --output RES "$WORK"/hot/* | awk '{s += $1} END {printf "%d", s / 1048576}'
}

run() { # NAME COMMAND...: one round in the cgroup; prints a table row
    local name=$1; shift
    rm -rf "$WORK/dst"
    sync
    echo 3 > /proc/sys/vm/drop_caches
    # shellcheck disable=SC2016
    bash -c 'echo $$ > '"$CG"'/cgroup.procs
        cat "$1"/hot/* > /dev/null; cat "$1"/hot/* > /dev/null' _ "$WORK"
    local before; before=$(hot_cached)
    local t0 t1
    t0=$(date +%s.%N)
    bash -c 'echo $$ > '"$CG"'/cgroup.procs; shift; exec "$@"' _ x "$@" > /dev/null
    t1=$(date +%s.%N)
    local after; after=$(hot_cached)
    local total=$((HOT_FILES * HOT_MIB))
    printf '| %-34s | %5d MiB | %5d MiB (%5.1f%%) | %6.2f s |\n' "$name" "$before" "$after" \
        "$(echo "100 * $after / $total" | bc -l)" "$(echo "$t1 - $t0" | bc -l)"
}

echo "hot set: $HOT_FILES x $HOT_MIB MiB; corpus: $CORPUS_FILES files, $CORPUS_MB MB; cgroup limit $LIMIT"
echo
echo "| replicator | hot set cached before | after | copy time |"
echo "| --- | --- | --- | --- |"
# The adaptive back-off is off: it reacts to any other reader of the disk, which would
# time the machine's neighbours rather than the cost of the cache handling.
run "fsync-repl push" "$BIN" push -q --no-adaptive "$WORK/src" "$WORK/dst"
run "fsync-repl push --keep-cache" "$BIN" push -q --no-adaptive --keep-cache "$WORK/src" "$WORK/dst"
run "rsync -a" rsync -a "$WORK/src/" "$WORK/dst/"
run "nocache rsync -a" nocache rsync -a "$WORK/src/" "$WORK/dst/"
run "fsync-repl push (remote DEST)" "$BIN" push -q --no-adaptive --rsh "$WORK/rsh" --remote-bin "$BIN" "$WORK/src" "h:$WORK/dst"
run "rsync -a (remote DEST)" rsync -a -e "$WORK/rsh" "$WORK/src/" "h:$WORK/dst/"
