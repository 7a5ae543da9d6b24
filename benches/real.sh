#!/usr/bin/env bash
# Real-data remote benchmark: successive released versions of a real source tree,
# applied the way a checkout applies them, pushed over ssh by fsync-repl and by rsync in
# the same run; bytes counted both ways on the wire, times by hyperfine.
#
#   benches/real.sh
#
# Data: the sdists of PACKAGE at each of VERSIONS, fetched from PyPI with
# `pip download --no-deps --no-binary :all:` (cached in CACHE_DIR). The working tree
# starts as the first version; each hop rewrites only the files whose content changed
# (`rsync -rc --delete` from the extracted next version: new mtimes on changed files
# only, as `git checkout` would), then both replicas are brought up to date.
#
# Scenarios, each against `rsync -a -H --delete -e ssh` (and with `-z` on both):
#   nochange  both replicas complete                    bytes goal <= 0.5
#   hop N     version N-1 -> N                         bytes goal <= 0.7 (plain and -z)
#                                                       time goal  <= 0.7
#   reuse     the second and later no-change pushes to the same host, sharing one ssh
#             connection (the default), against rsync          time goal <= 0.5
#   ssh start-up alone (`ssh HOST true`): the part of every fresh-connection time that
#             neither tool controls
# Bytes: both directions of the remote shell's stdin/stdout, counted by one wrapper for
# both tools (protocol bytes, before ssh's encryption); fsync-repl's own --json figures
# and rsync's --stats are shown beside them as a cross-check. Times: hyperfine medians,
# each destination restored before every run (untimed --prepare); the hops' times are
# pairs run in turn (see `pairs`), which hold up better on a machine whose speed drifts.
# Every replica is checked with an rsync -n -c -i dry run after each scenario.
#
# Environment (all optional)
#   PACKAGE    [Django]            VERSIONS  ["5.0.6 5.1 5.1.1"]
#   CACHE_DIR  downloaded sdists   [$SCRATCH/fsync-repl-real-cache]
#   SCRATCH    scratch parent (use tmpfs)                     [/dev/shm]
#   FSYNC_REPL binary [REPO/target/release/fsync-repl after `cargo build --release`]
#   RUNS       hyperfine runs per timing [5]          KEEP=1 keep the scratch dir
#   PAIRS      pairs per hop timing (run in turn, the median of their ratios) [20]
#   FR_OPTS    extra fsync-repl options, e.g. "--no-adaptive" (its back-off yields to
#              other work's I/O stalls on a busy machine; rsync has none)       [none]
# Tools: bash, hyperfine, rsync, ssh, sshd + ssh-keygen (openssh-server), python3, pip.
# Needs root for the throw-away sshd on 127.0.0.1. Exit 1 when a replica is wrong.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRATCH=${SCRATCH:-/dev/shm}
PACKAGE=${PACKAGE:-Django}
VERSIONS=(${VERSIONS:-5.0.6 5.1 5.1.1})
CACHE_DIR=${CACHE_DIR:-$SCRATCH/fsync-repl-real-cache}
RUNS=${RUNS:-5}
PAIRS=${PAIRS:-20}
KEEP=${KEEP:-0}
die() { echo "real.sh: $*" >&2; exit 1; }
q() { printf '%q' "$1"; }
log() { printf '\n== %s\n' "$*" >&2; }

for tool in hyperfine rsync python3 ssh ssh-keygen pip; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd not found (apt-get install openssh-server)"
[[ $(id -u) == 0 ]] || die "the throw-away sshd needs root"
if [[ -z ${FSYNC_REPL:-} ]]; then
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
    FSYNC_REPL=$REPO/target/release/fsync-repl
fi

# ---------------------------------------------------------------- data
mkdir -p "$CACHE_DIR"
for v in "${VERSIONS[@]}"; do
    if [[ ! -d $CACHE_DIR/$PACKAGE-$v ]]; then
        ls "$CACHE_DIR"/"$PACKAGE"-"$v".tar.gz >/dev/null 2>&1 ||
            pip download -q --no-deps --no-binary :all: -d "$CACHE_DIR" "$PACKAGE==$v" >&2 ||
            die "pip download $PACKAGE==$v failed"
        tar -xzf "$CACHE_DIR/$PACKAGE-$v.tar.gz" -C "$CACHE_DIR"
    fi
    [[ -d $CACHE_DIR/$PACKAGE-$v ]] || die "no $CACHE_DIR/$PACKAGE-$v after extracting"
done

WORK=$(mktemp -d "$SCRATCH/fsync-repl-real.XXXXXX")
SSHD_PID=
cleanup() {
    [[ -n $SSHD_PID ]] && { kill "$SSHD_PID" 2>/dev/null; wait "$SSHD_PID" 2>/dev/null; } || true
    # Shared connections this run left open end with their sockets.
    for s in "$WORK"/ctl/*; do [[ -S $s ]] && ssh -o ControlPath="$s" -O exit x 2>/dev/null; done || true
    [[ $KEEP == 1 ]] && echo "scratch kept in $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
cp "$FSYNC_REPL" "$WORK/fsync-repl"
FR=$WORK/fsync-repl
# Shared ssh connections of this run live here, not in the user's runtime directory.
mkdir -m 0700 "$WORK/ctl"
export XDG_RUNTIME_DIR=$WORK/ctl

# ---------------------------------------------------------------- throw-away sshd
D=$WORK/sshd
mkdir -p "$D" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$D/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$D/user_key"
cp "$D/user_key.pub" "$D/authorized_keys"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$D/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $PORT
HostKey $D/host_key
AuthorizedKeysFile $D/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
EOF
/usr/sbin/sshd -D -e -f "$D/sshd_config" 2>"$D/sshd.log" &
SSHD_PID=$!
SSHW="ssh -i $(q "$D/user_key") -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
for _ in $(seq 100); do $SSHW -p "$PORT" root@127.0.0.1 true 2>/dev/null && break; sleep 0.1; done
$SSHW -p "$PORT" root@127.0.0.1 true || { cat "$D/sshd.log" >&2; die "sshd did not start"; }
HOST=root@127.0.0.1

# The counting wrapper: bytes into the remote shell -> $COUNT.up, out of it -> .down.
cat >"$WORK/count-ssh" <<'EOF'
#!/usr/bin/env python3
import os, subprocess, sys, threading
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
up = 0
def pump():
    global up
    try:
        while b := os.read(0, 1 << 16):
            view = memoryview(b)
            while view:
                view = view[os.write(p.stdin.fileno(), view):]
            up += len(b)
    except OSError:
        pass
    p.stdin.close()
threading.Thread(target=pump, daemon=True).start()
down = 0
while b := os.read(p.stdout.fileno(), 1 << 16):
    view = memoryview(b)
    while view:
        view = view[os.write(1, view):]
    down += len(b)
rc = p.wait()
with open(os.environ["COUNT"], "w") as f:
    f.write(f"{up} {down}\n")
os._exit(rc)
EOF
chmod +x "$WORK/count-ssh"

# fr/rs OPTS... -> a command line pushing $SRC to $1 (the last word) on the target.
FR_OPTS=${FR_OPTS:-}
fr() { local d=${*: -1}; echo "$(q "$FR") push -q --json --delete $FR_OPTS ${*:1:$#-1} --rsh $(q "${RSHC:-$SSHW}") --port $PORT --remote-bin $(q "$FR") $(q "$SRC") $(q "$HOST:$d")"; }
rs() { local d=${*: -1}; echo "rsync -a -H --delete ${*:1:$#-1} -e $(q "$SSHW -p $PORT") $(q "$SRC")/ $(q "$HOST:$d")/"; }
SUMMARY=$WORK/summary.tsv
: >"$SUMMARY"
WRONG=0
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$SUMMARY"; }
verdict() { python3 -c "import sys; r = $1 / $2; print(f'{r:.3f}\t<= $3\t' + ('pass' if r <= $3 else 'FAIL'))"; }

verify() { # verify DEST
    local out
    out=$(rsync -a -H -n -c -i --delete --exclude=/.fsync-repl "$SRC/" "$1/" 2>&1)
    [[ -z $out ]] && return
    echo "   $1 differs from $SRC:" >&2
    printf '%s\n' "$out" | head -20 >&2
    WRONG=1
}

# bytes LABEL GOAL RESTORE_FR RESTORE_RS [OPTS...]: one counted run of each tool.
bytes() {
    local label=$1 goal=$2 r1=$3 r2=$4 f r
    shift 4
    bash -c "$r1"; bash -c "$r2"
    COUNT=$WORK/c-fr bash -c "$(RSHC="$WORK/count-ssh $SSHW" fr "$@" "$WORK/d-fr")" >"$WORK/fr.json"
    COUNT=$WORK/c-rs rsync -a -H --delete --stats "$@" -e "$WORK/count-ssh $SSHW -p $PORT" "$SRC/" "$HOST:$WORK/d-rs/" >"$WORK/rs.txt"
    verify "$WORK/d-fr"; verify "$WORK/d-rs"
    read -r fu fd <"$WORK/c-fr"; read -r ru rd <"$WORK/c-rs"
    f=$((fu + fd)) r=$((ru + rd))
    row "$label" "wire bytes, both ways" "$f ($fu up + $fd down)" "$r ($ru up + $rd down)" "$(verdict $f $r "$goal")"
    python3 - "$WORK/fr.json" "$WORK/rs.txt" >&2 <<'EOF'
import json, re, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
t = open(sys.argv[2]).read()
st = lambda n: re.search(n + r": ([\d,.]+)", t).group(1)
print(f"   fsync-repl --json: sent {j.get('wire_bytes_sent')} received {j.get('wire_bytes_received')}, "
      f"literal {j['bytes_literal']} matched {j['bytes_matched']}; rsync --stats: sent {st('Total bytes sent')} "
      f"received {st('Total bytes received')}, literal {st('Literal data')} matched {st('Matched data')}")
EOF
}

# timing LABEL GOAL PREP_FR PREP_RS CMD_FR CMD_RS
timing() {
    local label=$1 goal=$2 args=(--runs "$RUNS" --warmup 1 --style none --export-json "$WORK/t.json")
    [[ -n $3 ]] && args+=(--prepare "$3" --prepare "$4")
    hyperfine "${args[@]}" -n fr "$5 >/dev/null" -n rs "$6" >&2
    python3 - "$WORK/t.json" "$label" "$RUNS" "$goal" >>"$SUMMARY" <<'EOF'
import json, sys
d = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
f, r, goal = d["fr"], d["rs"], float(sys.argv[4])
print(f"{sys.argv[2]}\ttime (median of {sys.argv[3]})\t{f * 1000:.0f} ms\t{r * 1000:.0f} ms\t"
      f"{f / r:.3f}\t<= {goal}\t" + ("pass" if f / r <= goal else "FAIL"))
EOF
}

# pairs LABEL GOAL PREP_FR PREP_RS CMD_FR CMD_RS: $PAIRS pairs, the two runs of a pair one
# after the other (which goes first alternates), each destination prepared (untimed)
# before its run; the ratio is the median of the pairs' ratios. A machine whose speed
# drifts moves both runs of a pair alike, where separate medians would drift apart.
pairs() {
    local label=$1 goal=$2 i who t0 t1 out=$WORK/pairs.txt
    : >"$out"
    for ((i = 0; i < PAIRS; i++)); do
        bash -c "$3"; bash -c "$4"
        local fr_ns rs_ns
        for who in $( ((i % 2)) && echo "rs fr" || echo "fr rs"); do
            t0=$(date +%s%N)
            if [[ $who == fr ]]; then bash -c "$5" >/dev/null; else bash -c "$6"; fi
            t1=$(date +%s%N)
            [[ $who == fr ]] && fr_ns=$((t1 - t0)) || rs_ns=$((t1 - t0))
        done
        echo "$fr_ns $rs_ns" >>"$out"
    done
    python3 - "$out" "$label" "$PAIRS" "$goal" >>"$SUMMARY" <<'EOF2'
import statistics, sys
p = [tuple(map(int, l.split())) for l in open(sys.argv[1])]
f = statistics.median(a for a, _ in p) / 1e6
r = statistics.median(b for _, b in p) / 1e6
ratio, goal = statistics.median(a / b for a, b in p), float(sys.argv[4])
print(f"{sys.argv[2]}\ttime (median of {sys.argv[3]} pairs)\t{f:.0f} ms\t{r:.0f} ms\t"
      f"{ratio:.3f}\t<= {goal}\t" + ("pass" if ratio <= goal else "FAIL"))
EOF2
}

# ---------------------------------------------------------------- runs
SRC=$WORK/src
cp -a "$CACHE_DIR/$PACKAGE-${VERSIONS[0]}" "$SRC"
log "$PACKAGE ${VERSIONS[0]}: $(find "$SRC" -type f | wc -l) files, $(du -sh "$SRC" | cut -f1); initial copies"
bash -c "$(fr --no-reuse "$WORK/d-fr")" >/dev/null
bash -c "$(rs "$WORK/d-rs")"
cp -a "$WORK/d-fr" "$WORK/p-fr"; cp -a "$WORK/d-rs" "$WORK/p-rs"
log "no change"
bytes "no change" 0.5 true true
bytes "no change, -z" 0.5 true true -z
timing "no change, --no-reuse" 1 "" "" "$(fr --no-reuse "$WORK/d-fr")" "$(rs "$WORK/d-rs")"
# What neither tool can go below on a fresh connection: ssh's own start-up, the remote
# account's shell start-up files included.
hyperfine -N --runs "$RUNS" --warmup 1 --style none --export-json "$WORK/t.json" \
    "$SSHW -p $PORT $HOST true" >&2
python3 - "$WORK/t.json" "$RUNS" >>"$SUMMARY" <<'EOF2'
import json, sys
m = json.load(open(sys.argv[1]))["results"][0]["median"]
print(f"ssh start-up alone (ssh HOST true)\ttime (median of {sys.argv[2]})\t\t{m * 1000:.0f} ms")
EOF2
timing "no change, shared connection" 0.5 "" "" "$(fr "$WORK/d-fr")" "$(rs "$WORK/d-rs")"
prev=${VERSIONS[0]}
for v in "${VERSIONS[@]:1}"; do
    rsync -rc --delete "$CACHE_DIR/$PACKAGE-$v/" "$SRC/"
    n=$(rsync -rcn --out-format=%n "$CACHE_DIR/$PACKAGE-$prev/" "$SRC/" | grep -vc '/$' || true)
    label="hop $prev -> $v"
    log "$label ($n files differ)"
    restore_fr="rm -rf $(q "$WORK/d-fr") && cp -a $(q "$WORK/p-fr") $(q "$WORK/d-fr")"
    restore_rs="rm -rf $(q "$WORK/d-rs") && cp -a $(q "$WORK/p-rs") $(q "$WORK/d-rs")"
    bytes "$label" 0.7 "$restore_fr" "$restore_rs"
    bytes "$label, -z" 0.7 "$restore_fr" "$restore_rs" -z
    pairs "$label, --no-reuse" 0.7 "$restore_fr" "$restore_rs" "$(fr --no-reuse "$WORK/d-fr")" "$(rs "$WORK/d-rs")"
    pairs "$label, shared connection" 0.7 "$restore_fr" "$restore_rs" "$(fr "$WORK/d-fr")" "$(rs "$WORK/d-rs")"
    verify "$WORK/d-fr"; verify "$WORK/d-rs"
    rm -rf "$WORK/p-fr" "$WORK/p-rs"
    cp -a "$WORK/d-fr" "$WORK/p-fr"; cp -a "$WORK/d-rs" "$WORK/p-rs"
    prev=$v
done

echo
echo "$PACKAGE ${VERSIONS[*]}; FR_OPTS=${FR_OPTS:-none}; fsync-repl $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) vs $(rsync --version | head -1 | awk '{print $3}'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$SUMMARY" <<'EOF'
import sys
rows = [(l.rstrip("\n").split("\t") + [""] * 7)[:7] for l in open(sys.argv[1]) if l.strip()]
head = ["scenario", "metric", "fsync-repl", "rsync", "ratio", "goal", "verdict"]
w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
for r in [head] + rows:
    print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())
EOF
[[ $WRONG == 0 ]] || die "a replica differs from its source (see above)"
