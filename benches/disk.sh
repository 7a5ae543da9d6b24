#!/usr/bin/env bash
# Block-device benchmark: `fsync-repl push` (default, and --no-adaptive) against
# `rsync -a -H` and against `rsync -a -H` followed by `sync -f DEST`, on ext4 and XFS
# images mounted through loop devices whose
# backing files live on a real disk. On tmpfs a syncfs is free; here the price of
# `--fsync batch` (fsync-repl's default durability) is on the page, beside an rsync that
# makes its copy durable too.
#
#   benches/disk.sh [initial] [mutate] [reflink]          (default: all three)
#
# Scenarios (each one hyperfine invocation holding every command of the row)
#   initial   the corpus copied into an empty DEST. SRC and DEST are two images of the
#             same filesystem type, so the kernel can count what is read from SRC's
#             device. Before every run DEST is emptied and synced, and SRC's filesystem
#             is unmounted and mounted again: every run reads SRC cold.
#   mutate    the corpus after `corpus mutate` (a day of use), pushed with --delete into
#             a replica of the un-mutated corpus (restored by cp -a before every run),
#             SRC cold as above.
#             + bytes read from SRC, counted by the kernel for both tools in one
#               untimed cold run each: sectors read from SRC's loop device
#               (/sys/block/loopN/stat) and read_bytes and rchar of the whole process
#               tree (/proc/PID/io of a shell after it reaped the tool).
#   reflink   the corpus copied into an empty DEST on the same XFS image made with
#             -m reflink=1: fsync-repl (default, and --no-adaptive), rsync, and
#             `cp -a --reflink=always` for reference; plus the space each copy took.
#
# Goals: initial and mutate time <= 1.0x rsync+sync on each filesystem; bytes read from
# SRC on mutate <= 1.2x rsync's; reflink copy time <= 0.5x rsync's.
#
# Environment (all optional)
#   FSTYPES      filesystems to run on                                  [ext4 xfs]
#   IMG_DIR      where the image files go (a real disk, not tmpfs)      [/tmp]
#   IMG_SIZE     size of each image (sparse)                            [3G]
#   CORPUS_ARGS  options of `corpus make`                  [--users 4: ~8k files, 0.3 GB]
#   RUNS         hyperfine runs per command (no warmup: every run is prepared cold) [3]
#   FSYNC_REPL   binary to measure [REPO/target/release/fsync-repl after cargo build]
#   CORPUS       the corpus tool [built from examples/corpus.rs]
#
# Needs root (mount), mkfs.ext4, mkfs.xfs, hyperfine, rsync, python3.
# Exit status: 0 when every replica is correct, 1 when one differs or a tool fails.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FSTYPES=${FSTYPES:-ext4 xfs}
IMG_DIR=${IMG_DIR:-/tmp}
IMG_SIZE=${IMG_SIZE:-3G}
CORPUS_ARGS=${CORPUS_ARGS:---users 4}
RUNS=${RUNS:-3}

die() { echo "disk.sh: $*" >&2; exit 1; }

scenarios=("$@")
[[ ${#scenarios[@]} -eq 0 ]] && scenarios=(initial mutate reflink)
for s in "${scenarios[@]}"; do
    case $s in
        initial | mutate | reflink) ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown scenario '$s' (expected: initial mutate reflink)" ;;
    esac
done
want() { local s; for s in "${scenarios[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

[[ $(id -u) == 0 ]] || die "must run as root (mounts loop devices)"
for tool in hyperfine rsync python3 mkfs.ext4 mkfs.xfs; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if [[ -z ${FSYNC_REPL:-} ]]; then
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
    FSYNC_REPL=$REPO/target/release/fsync-repl
fi
. "$REPO/benches/corpus.sh"
REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || REV+="+uncommitted"

WORK=$(mktemp -d "$IMG_DIR/fsync-repl-disk.XXXXXX")
cleanup() {
    local m
    for m in $(findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cp "$FSYNC_REPL" "$WORK/fsync-repl"
FR=$WORK/fsync-repl
SUMMARY=$WORK/summary.tsv # scenario, metric, fsync-repl, rsync, ratio, rsync+sync, ratio, goal, verdict
: >"$SUMMARY"
WRONG=0

q() { printf '%q' "$1"; }
log() { printf '\n== %s\n' "$*" >&2; }

# image NAME FSTYPE [MKFS OPTIONS...]: makes, mounts and prints the mount point.
image() {
    local name=$1 fs=$2; shift 2
    local img=$WORK/$name.img mnt=$WORK/$name
    truncate -s "$IMG_SIZE" "$img"
    case $fs in
        ext4) mkfs.ext4 -q -F "$@" "$img" ;;
        xfs) mkfs.xfs -q -f "$@" "$img" ;;
    esac
    mkdir -p "$mnt"
    mount -o loop "$img" "$mnt"
    echo "$mnt"
}

# The command that drops a filesystem's page cache: unmount and mount it again.
remount() { echo "umount $(q "$1") && mount -o loop $(q "$WORK/$(basename "$1").img") $(q "$1")"; }

verify() {
    local out
    if out=$("$CORPUS" compare "$2" "$3" 2>&1); then
        echo "   verify $1: ok (${out##*$'\n'})" >&2
    else
        echo "   verify $1: WRONG" >&2
        printf '%s\n' "$out" | tail -20 | sed 's/^/      /' >&2
        WRONG=1
        printf '%s\tcompare\t-\t-\t-\t-\t-\t-\tWRONG\n' "$1" >>"$SUMMARY"
    fi
}

# bench SCENARIO GOAL PREPFN SRC [OPTION]: one hyperfine run of fsync-repl (default and
# --no-adaptive), rsync and rsync+sync copying SRC into D1, D4, D2, D3; PREPFN DEST prints
# the command that prepares DEST (each command's prepare touches its own DEST only).
bench() {
    local scen=$1 goal=$2 prep=$3 src=$4 opt=${5:-} json=$WORK/$1.json
    hyperfine --runs "$RUNS" --style basic --export-json "$json" \
        --prepare "$($prep "$D1")" -n fsync-repl "$FR push -q $opt $(q "$src") $(q "$D1")" \
        --prepare "$($prep "$D4")" -n "fsync-repl --no-adaptive" \
        "$FR push -q --no-adaptive $opt $(q "$src") $(q "$D4")" \
        --prepare "$($prep "$D2")" -n rsync "rsync -a -H $opt $(q "$src")/ $(q "$D2")/" \
        --prepare "$($prep "$D3")" -n rsync+sync \
        "rsync -a -H $opt $(q "$src")/ $(q "$D3")/ && sync -f $(q "$D3")" >&2
    python3 - "$json" "$scen" "$goal" >>"$SUMMARY" <<'EOF'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
f, n, r, s = res["fsync-repl"], res["fsync-repl --no-adaptive"], res["rsync"], res["rsync+sync"]
goal = float(sys.argv[3])
for stat in ("mean", "median"):
    ms = lambda x: f"{x[stat] * 1000:.0f} ms"
    ratio_s = f[stat] / s[stat]
    verdict = ("pass" if ratio_s <= goal else "FAIL") if stat == "median" else "-"
    print(f"{sys.argv[2]}\ttime ({stat})\t{ms(f)}\t{ms(r)}\t{f[stat] / r[stat]:.3f}\t{ms(s)}\t{ratio_s:.3f}\t"
          f"{'<= ' + sys.argv[3] + ' x rsync+sync' if stat == 'median' else '-'}\t{verdict}")
ms = lambda x: f"{x['median'] * 1000:.0f} ms"
print(f"{sys.argv[2]}\ttime (median), --no-adaptive\t{ms(n)}\t{ms(r)}\t{n['median'] / r['median']:.3f}\t"
      f"{ms(s)}\t{n['median'] / s['median']:.3f}\t-\t-")
EOF
}

# reads LABEL DEVICE_MNT CMD...: runs CMD once through a shell that prints its own
# /proc/PID/io after reaping it (so the whole process tree is counted), and the sectors
# read from the device under DEVICE_MNT meanwhile. Prints "dev_bytes read_bytes rchar".
reads() {
    local mnt=$2; shift 2
    local dev stat0 stat1 io
    dev=$(basename "$(findmnt -no SOURCE "$mnt")")
    stat0=$(awk '{print $3}' "/sys/block/$dev/stat")
    io=$(bash -c '"$@" >/dev/null; s=$?; cat /proc/$$/io; exit $s' _ "$@")
    stat1=$(awk '{print $3}' "/sys/block/$dev/stat")
    echo "$(( (stat1 - stat0) * 512 )) $(awk '/^read_bytes/ {print $2}' <<<"$io") $(awk '/^rchar/ {print $2}' <<<"$io")"
}

for fs in $FSTYPES; do
    want initial || want mutate || break
    log "$fs: images ($IMG_SIZE each) in $IMG_DIR, corpus make $CORPUS_ARGS"
    SM=$(image "src-$fs" "$fs")
    DM=$(image "dst-$fs" "$fs")
    # shellcheck disable=SC2086  # CORPUS_ARGS is a list of options
    "$CORPUS" make "$SM/homes" $CORPUS_ARGS
    D1=$DM/d1 D2=$DM/d2 D3=$DM/d3 D4=$DM/d4
    # The command that empties DEST and reads SRC cold; the one that restores DEST to
    # the replica of the day before and reads SRC cold.
    empty() { echo "rm -rf $(q "$1") && sync -f $(q "$DM") && $(remount "$SM")"; }
    restore() { echo "rm -rf $(q "$1") && cp -a $(q "$DM/pristine") $(q "$1") && sync -f $(q "$DM") && $(remount "$SM")"; }

    if want initial; then
        log "$fs initial: copy into an empty DEST, SRC cold"
        bench "$fs-initial" 1.0 empty "$SM/homes"
        verify "$fs initial fsync-repl" "$SM/homes" "$D1"
        verify "$fs initial rsync" "$SM/homes" "$D2"
        verify "$fs initial rsync+sync" "$SM/homes" "$D3"
        verify "$fs initial fsync-repl --no-adaptive" "$SM/homes" "$D4"
    fi

    if want mutate; then
        log "$fs mutate: a day of use, push --delete into a replica of the day before"
        rm -rf "$D1" "$D2" "$D3" "$D4"
        cp -a "$SM/homes" "$SM/mutated"
        "$CORPUS" mutate "$SM/mutated"
        cp -a "$SM/homes" "$DM/pristine"
        sync -f "$DM"
        bench "$fs-mutate" 1.0 restore "$SM/mutated" --delete
        verify "$fs mutate fsync-repl" "$SM/mutated" "$D1"
        verify "$fs mutate rsync" "$SM/mutated" "$D2"

        log "$fs mutate: bytes read from SRC, cold, one untimed run each"
        bash -c "$(restore "$D1")"
        read -r fd fb fc < <(reads x "$SM" "$FR" push -q --delete "$SM/mutated" "$D1")
        bash -c "$(restore "$D2")"
        read -r rd rb rc < <(reads x "$SM" rsync -a -H --delete "$SM/mutated/" "$D2/")
        verify "$fs mutate bytes fsync-repl" "$SM/mutated" "$D1"
        verify "$fs mutate bytes rsync" "$SM/mutated" "$D2"
        python3 - "$fs" "$fd" "$fb" "$fc" "$rd" "$rb" "$rc" >>"$SUMMARY" <<'EOF'
import sys
fs = sys.argv[1]
fd, fb, fc, rd, rb, rc = map(int, sys.argv[2:])
mb = lambda b: f"{b / 1e6:.1f} MB"
print(f"{fs}-mutate\tread from SRC device\t{mb(fd)}\t{mb(rd)}\t{fd / rd:.3f}\t-\t-\t<= 1.2\t"
      + ("pass" if fd <= 1.2 * rd else "FAIL"))
print(f"{fs}-mutate\t/proc io read_bytes\t{mb(fb)}\t{mb(rb)}\t{fb / max(rb, 1):.3f}\t-\t-\t-\t-")
print(f"{fs}-mutate\t/proc io rchar\t{mb(fc)}\t{mb(rc)}\t{fc / max(rc, 1):.3f}\t-\t-\t-\t-")
EOF
    fi
    umount "$SM" "$DM"
    rm -f "$WORK/src-$fs.img" "$WORK/dst-$fs.img"
done

if want reflink; then
    log "reflink: SRC and DEST on one XFS image with -m reflink=1"
    RM=$(image reflink xfs -m reflink=1)
    # shellcheck disable=SC2086
    "$CORPUS" make "$RM/homes" $CORPUS_ARGS
    R1=$RM/r1 R2=$RM/r2 R3=$RM/r3 R4=$RM/r4
    prep() { echo "rm -rf $(q "$1") && sync -f $(q "$RM")"; }
    hyperfine --runs "$RUNS" --style basic --export-json "$WORK/reflink.json" \
        --prepare "$(prep "$R1")" -n fsync-repl "$FR push -q $(q "$RM/homes") $(q "$R1")" \
        --prepare "$(prep "$R2")" -n "fsync-repl --no-adaptive" "$FR push -q --no-adaptive $(q "$RM/homes") $(q "$R2")" \
        --prepare "$(prep "$R3")" -n rsync "rsync -a -H $(q "$RM/homes")/ $(q "$R3")/" \
        --prepare "$(prep "$R4")" -n "cp -a --reflink=always" "cp -a --reflink=always $(q "$RM/homes") $(q "$R4")" >&2
    verify "reflink cp" "$RM/homes" "$R4"
    rm -rf "$R1" "$R2" "$R3" "$R4"
    used() { sync -f "$RM"; df -B1 --output=used "$RM" | tail -1; }
    u0=$(used); "$FR" push -q "$RM/homes" "$R1"; u1=$(used)
    "$FR" push -q --no-adaptive "$RM/homes" "$R2"; u2=$(used)
    rsync -a -H "$RM/homes/" "$R3/"; u3=$(used)
    verify "reflink fsync-repl" "$RM/homes" "$R1"
    verify "reflink fsync-repl --no-adaptive" "$RM/homes" "$R2"
    verify "reflink rsync" "$RM/homes" "$R3"
    python3 - "$WORK/reflink.json" "$u0" "$u1" "$u2" "$u3" >>"$SUMMARY" <<'EOF'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
r = res["rsync"]
u0, u1, u2, u3 = map(int, sys.argv[2:])
ms = lambda x: f"{x['median'] * 1000:.0f} ms"
for name in ("fsync-repl", "fsync-repl --no-adaptive", "cp -a --reflink=always"):
    f = res[name]
    ratio = f["median"] / r["median"]
    goal, verdict = ("<= 0.5", "pass" if ratio <= 0.5 else "FAIL") if name == "fsync-repl" else ("-", "-")
    print(f"xfs-reflink\ttime (median): {name}\t{ms(f)}\t{ms(r)}\t{ratio:.3f}\t-\t-\t{goal}\t{verdict}")
mb = lambda b: f"{b / 1e6:.1f} MB"
print(f"xfs-reflink\tspace used by the copy\t{mb(u1 - u0)} (--no-adaptive: {mb(u2 - u1)})\t{mb(u3 - u2)}\t"
      f"{(u1 - u0) / max(u3 - u2, 1):.3f}\t-\t-\t-\t-")
EOF
fi

echo
echo "fsync-repl $("$FR" --version 2>/dev/null | awk '{print $2}') ($REV) vs $(rsync --version | head -1 | awk '{print "rsync " $3}'), $(nproc) cores, images on $(df --output=source "$IMG_DIR" | tail -1) ($(df --output=fstype "$IMG_DIR" | tail -1)), runs=$RUNS, $(date -u +%Y-%m-%d)"
python3 - "$SUMMARY" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
head = ["scenario", "metric", "fsync-repl", "rsync", "ratio", "rsync+sync", "ratio", "goal", "verdict"]
w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
line = lambda r: "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip()
print(line(head)); print(line(["-" * x for x in w]))
for r in rows: print(line(r))
EOF
if [[ $WRONG != 0 ]]; then
    echo "a replica differs from its source: see 'verify ... WRONG' above" >&2
    exit 1
fi
