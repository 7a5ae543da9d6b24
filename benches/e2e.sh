#!/usr/bin/env bash
# End-to-end benchmark: `fsync-repl push` against `rsync -a -H` on the project's corpus (examples/corpus.rs).
#
#   benches/e2e.sh [initial] [nochange] [mutate] [big]      (default: all four)
#
# Each scenario is ONE hyperfine invocation holding both commands, so the ratio
# fsync-repl/rsync comes from the same run on the same (noisy) machine. `--prepare`
# resets the destinations, so only the replication itself is timed. After every
# scenario both replicas are checked with corpus compare: a fast-but-wrong run fails.
#
# Scenarios
#   initial   copy of the default corpus (examples/corpus.rs make: ~16.6k files, 0.5 GB) into an
#             empty destination                                       target ratio <= 0.6
#   nochange  re-run with both destinations already complete         target ratio <= 0.5
#   mutate    after `corpus mutate (a day of use)` on a copy of the source, with --delete, from a
#             replica of the un-mutated source                        target ratio <= 0.5
#             (bytes read from SRC: benches/disk.sh, counted by the kernel)
#   big       200,000-file tree (--users 40 --small 5000 --medium 0 --large-mib 0):
#             no-change ratio (target <= 0.5), fsync-repl peak RSS of that run from
#             /usr/bin/time -v (target <= 200 B/file + 32 MiB), and the initial copy
#             ratio and peak RSS (reported, no target)
#
# The summary gives, per timed scenario, the ratio of the means and of the medians (with
# pass/FAIL against the target), of the fastest runs, and of the CPU time (user+sys of
# all threads/processes) -- the last two help read a run on a busy machine.
#
# Environment (all optional)
#   CORPUS       the corpus tool [built from examples/corpus.rs]
#   SCRATCH        parent of the scratch directory (use tmpfs)  [/dev/shm]
#   CACHE_DIR      if set, generated source trees are kept here and reused (they are
#                  deterministic); otherwise they live in the scratch dir and are removed
#   FSYNC_REPL     binary to measure     [REPO/target/release/fsync-repl after
#                  `cargo build --release`]; it is copied to the scratch dir first
#   RUNS, WARMUP   hyperfine runs / warmup runs per scenario             [10, 1]
#   BIG_RUNS, BIG_WARMUP   the same for the 200k-file tree               [5, 1]
#   KEEP=1         keep the scratch directory (printed at the end)
#
# Tools: bash, hyperfine, rsync, python3, GNU time (/usr/bin/time, Debian package `time`).
# Exit status: 0 when every replica is correct (missed targets are shown as FAIL in the
# summary), 1 when a replica differs from its source or a tool fails.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRATCH=${SCRATCH:-/dev/shm}
CACHE_DIR=${CACHE_DIR:-}
BUILD=0
[[ -z ${FSYNC_REPL:-} ]] && BUILD=1
FSYNC_REPL=${FSYNC_REPL:-$REPO/target/release/fsync-repl}
RUNS=${RUNS:-10}
WARMUP=${WARMUP:-1}
BIG_RUNS=${BIG_RUNS:-5}
BIG_WARMUP=${BIG_WARMUP:-1}
KEEP=${KEEP:-0}


die() { echo "e2e.sh: $*" >&2; exit 1; }

scenarios=("$@")
[[ ${#scenarios[@]} -eq 0 ]] && scenarios=(initial nochange mutate big)
for s in "${scenarios[@]}"; do
    case $s in
        initial | nochange | mutate | big) ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown scenario '$s' (expected: initial nochange mutate big)" ;;
    esac
done
want() { local s; for s in "${scenarios[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

for tool in hyperfine rsync python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install $tool)"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"
. "$REPO/benches/corpus.sh"
if [[ $BUILD == 1 ]]; then
    echo "cargo build --release" >&2
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x $FSYNC_REPL ]] || die "$FSYNC_REPL is not an executable"
# The source state the binary was built from (taken now: the tree may change during the run).
REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
if [[ $BUILD == 1 ]] && ! git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
    REV+="+uncommitted"
fi

WORK=$(mktemp -d "$SCRATCH/fsync-repl-e2e.XXXXXX")
cleanup() {
    if [[ $KEEP == 1 ]]; then
        echo "scratch kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Measure a private copy: a rebuild during the run must not change what is timed.
cp "$FSYNC_REPL" "$WORK/fsync-repl"
FSYNC_REPL=$WORK/fsync-repl
SUMMARY=$WORK/summary.tsv # scenario, metric, fsync-repl, rsync, ratio, target, verdict
: >"$SUMMARY"
WRONG=0

q() { printf '%q' "$1"; }
log() { printf '\n== %s\n' "$*" >&2; }

# make_tree NAME ARGS... : a deterministic source tree, cached in CACHE_DIR if set.
make_tree() {
    local name=$1; shift
    local dir
    if [[ -n $CACHE_DIR ]]; then
        dir=$CACHE_DIR/$name
        mkdir -p "$CACHE_DIR"
        if [[ ! -f $dir.done ]]; then
            rm -rf "$dir"
            "$CORPUS" make "$dir" "$@" >&2
            touch "$dir.done"
        fi
    else
        dir=$WORK/$name
        [[ -d $dir ]] || "$CORPUS" make "$dir" "$@" >&2
    fi
    echo "$dir"
}

# verify LABEL SRC DST: corpus compare must report no difference.
verify() {
    local out
    if out=$("$CORPUS" compare "$2" "$3" 2>&1); then
        echo "   verify $1: ok (${out##*$'\n'})" >&2
    else
        echo "   verify $1: WRONG" >&2
        printf '%s\n' "$out" | tail -20 | sed 's/^/      /' >&2
        WRONG=1
        printf '%s\t%s\t-\t-\t-\t-\tWRONG\n' "$1" "compare" >>"$SUMMARY"
    fi
}

# bench SCENARIO TARGET RUNS WARMUP PREP1 CMD1 PREP2 CMD2 : one hyperfine run, both commands.
# TARGET is the highest passing ratio fsync-repl/rsync, or - for none.
bench() {
    local scen=$1 target=$2 runs=$3 warmup=$4 prep1=$5 cmd1=$6 prep2=$7 cmd2=$8
    local json=$WORK/$scen.json
    local args=(--runs "$runs" --warmup "$warmup" --export-json "$json" --style basic)
    [[ -n $prep1 ]] && args+=(--prepare "$prep1" --prepare "$prep2")
    hyperfine "${args[@]}" -n fsync-repl "$cmd1" -n rsync "$cmd2" >&2
    python3 - "$json" "$scen" "$target" >>"$SUMMARY" <<'EOF'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
f, r = res["fsync-repl"], res["rsync"]
target = sys.argv[3]
for stat in ("mean", "median"):
    ratio = f[stat] / r[stat]
    sd = lambda x: f" ± {x['stddev']*1000:.1f}" if stat == "mean" and x.get("stddev") is not None else ""
    fv, rv = f"{f[stat]*1000:.1f} ms{sd(f)}", f"{r[stat]*1000:.1f} ms{sd(r)}"
    if target == "-":
        cond, verdict = "-", "-"
    else:
        cond, verdict = f"<= {target}", ("pass" if ratio <= float(target) else "FAIL")
    print(f"{sys.argv[2]}\ttime ({stat})\t{fv}\t{rv}\t{ratio:.3f}\t{cond}\t{verdict}")
# Fastest run: noise from other work on the machine only ever adds time.
print(f"{sys.argv[2]}\ttime (min)\t{f['min']*1000:.1f} ms\t{r['min']*1000:.1f} ms\t{f['min'] / r['min']:.3f}\t-\t-")
# CPU time (user + system, all threads and processes): what the run costs the machine;
# wall time below it means parallelism.
fc, rc = f["user"] + f["system"], r["user"] + r["system"]
print(f"{sys.argv[2]}\tcpu user+sys (mean)\t{fc*1000:.1f} ms\t{rc*1000:.1f} ms\t{fc / rc:.3f}\t-\t-")
EOF
}

# peak_rss CMD... : run once under GNU time, print the maximum resident set in bytes.
peak_rss() {
    local t=$WORK/time.txt
    /usr/bin/time -v -o "$t" "$@" >/dev/null
    awk -F': ' '/Maximum resident set size/ {print $2 * 1024}' "$t"
}

FR=$(q "$FSYNC_REPL")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- default corpus
if want initial || want nochange || want mutate; then
    log "corpus: corpus make (default: 8 users, ~16k files, 437 MB)"
    SRC=$(make_tree homes)
    "$CORPUS" describe "$SRC" >&2
    D1=$WORK/d1 D2=$WORK/d2
fi

if want initial; then
    log "initial: copy into an empty destination"
    bench initial 0.6 "$RUNS" "$WARMUP" \
        "rm -rf $(q "$D1")" "$FR push -q $(q "$SRC") $(q "$D1")" \
        "rm -rf $(q "$D2")" "rsync -a -H $(q "$SRC")/ $(q "$D2")/"
    verify "initial fsync-repl" "$SRC" "$D1"
    verify "initial rsync" "$SRC" "$D2"
fi

if want nochange; then
    log "nochange: re-run with complete destinations"
    [[ -d $D1 ]] || "$FSYNC_REPL" push -q "$SRC" "$D1"
    [[ -d $D2 ]] || rsync -a -H "$SRC/" "$D2/"
    bench nochange 0.5 "$RUNS" "$WARMUP" \
        "" "$FR push -q $(q "$SRC") $(q "$D1")" \
        "" "rsync -a -H $(q "$SRC")/ $(q "$D2")/"
    verify "nochange fsync-repl" "$SRC" "$D1"
    verify "nochange rsync" "$SRC" "$D2"
fi

if want mutate; then
    log "mutate: corpus mutate (a day of use) on a copy of the source, then push --delete"
    SRCM=$WORK/homes-mutated PRISTINE=$WORK/pristine
    rm -rf "$SRCM" "$PRISTINE"
    cp -a "$SRC" "$SRCM"
    "$CORPUS" mutate "$SRCM" >&2
    "$CORPUS" describe "$SRCM" >&2
    # The un-mutated replica both destinations are restored to before every run.
    cp -a "$SRC" "$PRISTINE"
    verify "mutate pristine replica" "$SRC" "$PRISTINE"
    restore() { echo "rm -rf $(q "$1") && cp -a $(q "$PRISTINE") $(q "$1")"; }
    bench mutate 0.5 "$RUNS" "$WARMUP" \
        "$(restore "$D1")" "$FR push -q --delete $(q "$SRCM") $(q "$D1")" \
        "$(restore "$D2")" "rsync -a -H --delete $(q "$SRCM")/ $(q "$D2")/"
    verify "mutate fsync-repl" "$SRCM" "$D1"
    verify "mutate rsync" "$SRCM" "$D2"
    # Bytes read from SRC are not measured here: on tmpfs the kernel fetches nothing
    # from a device, and rchar misses mmap reads and counts rsync's internal pipe.
    # benches/disk.sh counts them on a block device (SRC's sectors read, cold cache).
    rm -rf "$SRCM" "$PRISTINE"
fi
if [[ -n ${D1:-} ]]; then rm -rf "$D1" "$D2"; fi

# ---------------------------------------------------------------- 200k-file tree
if want big; then
    log "big: corpus make --users 40 --small 5000 --medium 0 --large-mib 0"
    BIG=$(make_tree big200k --users 40 --small 5000 --medium 0 --large-mib 0)
    "$CORPUS" describe "$BIG" >&2
    # "per file": non-directory entries.
    NFILES=$(python3 -c 'import os,sys; print(sum(len(f) for _,_,f in os.walk(sys.argv[1])))' "$BIG")
    B1=$WORK/big1 B2=$WORK/big2

    log "big: initial copy"
    bench big-initial - "$BIG_RUNS" "$BIG_WARMUP" \
        "rm -rf $(q "$B1")" "$FR push -q $(q "$BIG") $(q "$B1")" \
        "rm -rf $(q "$B2")" "rsync -a -H $(q "$BIG")/ $(q "$B2")/"
    verify "big initial fsync-repl" "$BIG" "$B1"
    verify "big initial rsync" "$BIG" "$B2"

    log "big: no-change re-run"
    bench big-nochange 0.5 "$BIG_RUNS" "$BIG_WARMUP" \
        "" "$FR push -q $(q "$BIG") $(q "$B1")" \
        "" "rsync -a -H $(q "$BIG")/ $(q "$B2")/"
    verify "big nochange fsync-repl" "$BIG" "$B1"
    verify "big nochange rsync" "$BIG" "$B2"

    log "big: peak RSS (/usr/bin/time -v, one untimed run each)"
    rss_nc=$(peak_rss "$FSYNC_REPL" push -q "$BIG" "$B1")
    rss_nc_rs=$(peak_rss rsync -a -H "$BIG/" "$B2/")
    rm -rf "$B1" "$B2"
    rss_in=$(peak_rss "$FSYNC_REPL" push -q "$BIG" "$B1")
    rss_in_rs=$(peak_rss rsync -a -H "$BIG/" "$B2/")
    verify "big rss-run fsync-repl" "$BIG" "$B1"
    python3 - "$NFILES" "$rss_nc" "$rss_nc_rs" "$rss_in" "$rss_in_rs" >>"$SUMMARY" <<'EOF'
import sys
n, nc, ncr, ini, inr = map(int, sys.argv[1:])
limit = 200 * n + 32 * 2**20
mb = lambda b: f"{b / 1e6:.1f} MB"
print(f"big-nochange\tpeak RSS\t{mb(nc)} = {nc / n:.0f} B/file ({n} files)\t{mb(ncr)} (largest process)\t"
      f"{nc / ncr:.3f}\t<= {mb(limit)}\t" + ("pass" if nc <= limit else "FAIL"))
print(f"big-initial\tpeak RSS\t{mb(ini)} = {ini / n:.0f} B/file\t{mb(inr)} (largest process)\t{ini / inr:.3f}\t-\t-")
EOF
    rm -rf "$B1" "$B2"
fi

# ---------------------------------------------------------------- summary
echo
echo "load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews both tools)"
echo "fsync-repl $("$FSYNC_REPL" --version 2>/dev/null | awk '{print $2}') ($REV) vs $(rsync --version | head -1 | awk '{print "rsync " $3}'), $(nproc) cores, scratch on $(df --output=fstype "$WORK" | tail -1), runs=$RUNS+$WARMUP warmup, big runs=$BIG_RUNS+$BIG_WARMUP warmup"
python3 - "$SUMMARY" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
head = ["scenario", "metric", "fsync-repl", "rsync", "ratio", "target", "verdict"]
w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
line = lambda r: "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip()
print(line(head)); print(line(["-" * x for x in w]))
for r in rows: print(line(r))
EOF
if [[ $WRONG != 0 ]]; then
    echo "a replica differs from its source: see 'verify ... WRONG' above" >&2
    exit 1
fi
