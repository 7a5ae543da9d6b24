#!/usr/bin/env bash
# Remote benchmark: `fsync-repl push` to host:path over ssh against `rsync -a -H -e ssh`
# on the project's corpus (examples/corpus.rs).
#
#   benches/remote.sh [initial] [nochange] [mutate]      (default: all three)
#
# By default a throw-away OpenSSH server is started on 127.0.0.1 (free port, fresh host
# and user keys, its own sshd_config, all in the scratch dir; killed on exit), so it needs
# root and openssh-server. Both tools then reach it with the same ssh command:
#   ssh -i KEY -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
#       -o BatchMode=yes -o LogLevel=ERROR -p PORT
# and the release binary is both the local fsync-repl and --remote-bin.
#
# Each scenario is ONE hyperfine invocation holding three commands: fsync-repl, rsync,
# and `ssh ... true` (the ssh start-up alone, reported as a share of each tool's run), so
# the ratio fsync-repl/rsync comes from the same run on the same (noisy) machine.
# `--prepare` resets the destinations, so only the replication itself is timed. After
# every scenario both replicas are checked (corpus compare; with SSH_HOST, an rsync -n -c
# dry run): a fast-but-wrong run fails.
#
# Scenarios
#   initial   copy of the default corpus (examples/corpus.rs make: ~16.6k files, 0.5 GB) into an
#             empty remote destination                                target ratio <= 0.8
#   nochange  re-run with both destinations already complete          target ratio <= 0.7
#   mutate    after `corpus mutate (a day of use)` on a copy of the source, with --delete, each
#             destination restored to a replica of the un-mutated source before each run
#                                                                     target ratio <= 0.6
#             + bytes over the wire (one untimed run each): rsync --stats "Total bytes
#               sent" vs the bytes fsync-repl wrote into ssh's stdin, counted by a
#               remote-shell wrapper (a python3 byte counter on each direction; it also
#               counts rsync's stream as a cross-check)             target ratio <= 0.05
#             Both counts are of each tool's own protocol stream (before ssh's encryption).
#
# Environment (all optional)
#   CORPUS       the corpus tool [built from examples/corpus.rs]
#   SCRATCH      parent of the scratch directory (use tmpfs)   [/dev/shm]
#   CACHE_DIR    if set, generated source trees are kept here and reused
#   FSYNC_REPL   binary to measure [REPO/target/release/fsync-repl after
#                `cargo build --release`]; copied to the scratch dir first
#   FR_OPTS      extra fsync-repl options for every run, e.g. "--no-adaptive" (the
#                adaptive back-off slows fsync-repl down when OTHER work on the machine
#                causes I/O stalls; the summary counts the runs it slowed)      [none]
#   RUNS, WARMUP hyperfine runs / warmup runs per scenario             [10, 1]
#   KEEP=1       keep the scratch directory (printed at the end)
#   An existing ssh target instead of the throw-away sshd:
#   SSH_HOST     user@host (setting it selects this mode)
#   SSH_PORT     [22]
#   SSH_OPTS     extra ssh options, e.g. "-i ~/.ssh/bench_key"
#   REMOTE_DIR   parent of the remote scratch dir                      [/dev/shm]
#                (the binary is copied there and used as --remote-bin; the remote host
#                needs rsync; replicas are verified with an rsync -n -c -i dry run)
#
# Tools: bash, hyperfine, rsync, ssh, sshd + ssh-keygen (openssh-server), python3.
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
KEEP=${KEEP:-0}
SSH_HOST=${SSH_HOST:-}
SSH_PORT=${SSH_PORT:-22}
SSH_OPTS=${SSH_OPTS:-}
REMOTE_DIR=${REMOTE_DIR:-/dev/shm}
FR_OPTS=${FR_OPTS:-}


die() { echo "remote.sh: $*" >&2; exit 1; }

scenarios=("$@")
[[ ${#scenarios[@]} -eq 0 ]] && scenarios=(initial nochange mutate)
for s in "${scenarios[@]}"; do
    case $s in
        initial | nochange | mutate) ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown scenario '$s' (expected: initial nochange mutate)" ;;
    esac
done
want() { local s; for s in "${scenarios[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

for tool in hyperfine rsync python3 ssh; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install $tool)"
done
if [[ -z $SSH_HOST ]]; then
    [[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd not found (apt-get install openssh-server), or set SSH_HOST"
    command -v ssh-keygen >/dev/null || die "ssh-keygen not found (apt-get install openssh-client)"
    [[ $(id -u) == 0 ]] || die "the throw-away sshd needs root; or set SSH_HOST to an existing target"
fi
. "$REPO/benches/corpus.sh"
if [[ $BUILD == 1 ]]; then
    echo "cargo build --release" >&2
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x $FSYNC_REPL ]] || die "$FSYNC_REPL is not an executable"
REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
if [[ $BUILD == 1 ]] && ! git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
    REV+="+uncommitted"
fi

WORK=$(mktemp -d "$SCRATCH/fsync-repl-remote.XXXXXX")
SSHD_PID=
RWORK=
LOCAL_TARGET=1
cleanup() {
    if [[ -n $SSHD_PID ]]; then
        kill "$SSHD_PID" 2>/dev/null || true
        wait "$SSHD_PID" 2>/dev/null || true
    fi
    if [[ $KEEP == 1 ]]; then
        echo "scratch kept in $WORK${SSH_HOST:+ and $SSH_HOST:$RWORK}" >&2
    else
        if [[ $LOCAL_TARGET == 0 && -n $RWORK ]]; then
            "${SSH[@]}" "$SSH_HOST" -- "rm -rf $(printf '%q' "$RWORK")" || true
        fi
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
cp "$FSYNC_REPL" "$WORK/fsync-repl"
FSYNC_REPL=$WORK/fsync-repl
SUMMARY=$WORK/summary.tsv # scenario, metric, fsync-repl, rsync, ratio, target, verdict
: >"$SUMMARY"
WRONG=0

q() { printf '%q' "$1"; }
log() { printf '\n== %s\n' "$*" >&2; }

# ---------------------------------------------------------------- the ssh target
# SSH_WORDS: the ssh command without the port (fsync-repl takes the port as --port).
if [[ -z $SSH_HOST ]]; then
    log "throw-away sshd on 127.0.0.1"
    D=$WORK/sshd
    mkdir -p "$D" /run/sshd # sshd refuses to start without its privilege separation dir
    ssh-keygen -q -t ed25519 -N '' -C fsync-repl-bench -f "$D/host_key"
    ssh-keygen -q -t ed25519 -N '' -C fsync-repl-bench -f "$D/user_key"
    cp "$D/user_key.pub" "$D/authorized_keys"
    for attempt in 1 2 3; do
        SSH_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        cat >"$D/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $SSH_PORT
HostKey $D/host_key
PidFile $D/sshd.pid
AuthorizedKeysFile $D/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
EOF
        /usr/sbin/sshd -D -e -f "$D/sshd_config" 2>"$D/sshd.log" &
        SSHD_PID=$!
        # Bounded poll for the SSH banner (10 s), or sshd exiting (port taken: retry).
        for _ in $(seq 200); do
            kill -0 "$SSHD_PID" 2>/dev/null || break
            if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT && head -c 4 <&3" 2>/dev/null |
                grep -q '^SSH-'; then
                break 2
            fi
            sleep 0.05
        done
        kill "$SSHD_PID" 2>/dev/null || true
        wait "$SSHD_PID" 2>/dev/null || true
        SSHD_PID=
    done
    [[ -n $SSHD_PID ]] || { cat "$D/sshd.log" >&2; die "sshd did not start"; }
    SSH_HOST=root@127.0.0.1
    SSH_WORDS="ssh -i $(q "$D/user_key") -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
    LOCAL_TARGET=1
else
    SSH_WORDS="ssh -o BatchMode=yes -o LogLevel=ERROR $SSH_OPTS"
    LOCAL_TARGET=0
fi
SSHP="$SSH_WORDS -p $SSH_PORT" # the full ssh command (a shell string)
eval "SSH=($SSHP)"             # ... and as words
"${SSH[@]}" "$SSH_HOST" true || die "cannot run a command on $SSH_HOST through: $SSHP"

if [[ $LOCAL_TARGET == 1 ]]; then
    RWORK=$WORK
    RBIN=$FSYNC_REPL
    # A remote shell command, as a string for hyperfine's --prepare.
    on_remote() { echo "$1"; }
else
    RWORK=$("${SSH[@]}" "$SSH_HOST" -- "mktemp -d $(q "$REMOTE_DIR")/fsync-repl-remote.XXXXXX")
    rsync -a -e "$SSHP" "$FSYNC_REPL" "$SSH_HOST:$RWORK/fsync-repl"
    RBIN=$RWORK/fsync-repl
    on_remote() { echo "$SSHP $(q "$SSH_HOST") -- $(q "$1")"; }
fi
run_remote() { bash -c "$(on_remote "$1")"; }

# The remote-shell wrapper that counts each direction of the stream (untimed runs only):
# bytes the local tool writes into ssh -> $COUNT.up, bytes it reads from ssh -> $COUNT.down.
# It ends when ssh ends, like ssh itself: rsync keeps its end of ssh's stdin open until
# ssh has exited, so a plain `pv | ssh | pv` pipeline would wait for it forever.
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
for suffix, n in ((".up", up), (".down", down)):
    with open(os.environ["COUNT"] + suffix, "w") as f:
        f.write(f"{n}\n")
os._exit(rc)
EOF
chmod +x "$WORK/count-ssh"
counted() { tail -1 "$1"; }

# ---------------------------------------------------------------- helpers
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

# verify LABEL SRC DST (DST on the target): no difference allowed.
verify() {
    local out
    if [[ $LOCAL_TARGET == 1 ]]; then
        out=$("$CORPUS" compare "$2" "$3" 2>&1) && { echo "   verify $1: ok (${out##*$'\n'})" >&2; return; }
    else
        # An itemized checksum dry run lists every difference (content, mode, mtime, links).
        out=$(rsync -a -H -n -c -i --delete -e "$SSHP" "$2/" "$SSH_HOST:$3/" 2>&1) && [[ -z $out ]] &&
            { echo "   verify $1: ok (rsync -n -c: no difference)" >&2; return; }
    fi
    echo "   verify $1: WRONG" >&2
    printf '%s\n' "$out" | tail -20 | sed 's/^/      /' >&2
    WRONG=1
    printf '%s\t%s\t-\t-\t-\t-\tWRONG\n' "$1" "verify" >>"$SUMMARY"
}

# The timed commands. fr/rs take SRC and the remote DEST path; extra options first.
FR=$(q "$FSYNC_REPL")
FR_OPTS_Q=""
for o in $FR_OPTS; do FR_OPTS_Q+=" $(q "$o")"; done
fr() { # fr [OPTS...] SRC DST
    local src=${@: -2:1} dst=${@: -1} opts=("${@:1:$#-2}") o s=""
    for o in "${opts[@]}"; do s+=" $(q "$o")"; done
    echo "$FR push -q --json$FR_OPTS_Q$s --rsh $(q "$SSH_WORDS") --port $SSH_PORT --remote-bin $(q "$RBIN") $(q "$src") $(q "$SSH_HOST:$dst")"
}
rs() { # rs [OPTS...] SRC DST
    local src=${@: -2:1} dst=${@: -1} opts=("${@:1:$#-2}") o s=""
    for o in "${opts[@]}"; do s+=" $(q "$o")"; done
    echo "rsync -a -H$s -e $(q "$SSHP") $(q "$src")/ $(q "$SSH_HOST:$dst")/"
}
SSH_TRUE="$SSHP $(q "$SSH_HOST") true"

# bench SCENARIO TARGET PREP1 CMD1 PREP2 CMD2 : one hyperfine run with fsync-repl, rsync
# and the ssh start-up. TARGET is the highest passing ratio fsync-repl/rsync.
bench() {
    local scen=$1 target=$2 prep1=$3 cmd1=$4 prep2=$5 cmd2=$6
    local json=$WORK/$scen.json reports=$WORK/$scen-fsync-repl.jsonl
    local args=(--runs "$RUNS" --warmup "$WARMUP" --export-json "$json" --style basic)
    [[ -n $prep1 ]] && args+=(--prepare "$prep1" --prepare "$prep2" --prepare true)
    : >"$reports"
    # Each fsync-repl run appends its --json report (warmup runs included).
    hyperfine "${args[@]}" -n fsync-repl "$cmd1 >>$(q "$reports")" -n rsync "$cmd2" \
        -n ssh-startup "$SSH_TRUE" >&2
    python3 - "$json" "$scen" "$target" "$reports" "$WARMUP" >>"$SUMMARY" <<'EOF'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
# The timed runs' reports (the warmup runs come first).
reps = [json.loads(l) for l in open(sys.argv[4]) if l.startswith("{")][int(sys.argv[5]):]
f, r, s = res["fsync-repl"], res["rsync"], res["ssh-startup"]
scen, target = sys.argv[2], sys.argv[3]
ms = lambda x: f"{x * 1000:.1f} ms"
# hyperfine gives no standard deviation for a single run.
dev = lambda x: f" ± {(x.get('stddev') or 0) * 1000:.1f}"
for stat in ("mean", "median"):
    ratio = f[stat] / r[stat]
    sd = lambda x: dev(x) if stat == "mean" else ""
    verdict = "pass" if ratio <= float(target) else "FAIL"
    print(f"{scen}\ttime ({stat})\t{ms(f[stat])}{sd(f)}\t{ms(r[stat])}{sd(r)}\t{ratio:.3f}\t<= {target}\t{verdict}")
# Local CPU only (the client and its ssh): the far side runs under sshd, outside hyperfine.
fc, rc = f["user"] + f["system"], r["user"] + r["system"]
print(f"{scen}\tlocal cpu user+sys (mean)\t{ms(fc)}\t{ms(rc)}\t{fc / rc:.3f}\t-\t-")
print(f"{scen}\tssh start-up `ssh true` {ms(s['mean'])}{dev(s)}: share of run\t"
      f"{s['mean'] / f['mean']:.0%}\t{s['mean'] / r['mean']:.0%}\t-\t-\t-")
print(f"{scen}\ttime minus ssh start-up (mean)\t{ms(f['mean'] - s['mean'])}\t{ms(r['mean'] - s['mean'])}\t"
      f"{(f['mean'] - s['mean']) / max(r['mean'] - s['mean'], 1e-9):.3f}\t-\t-")
# fsync-repl's own clock runs from after the handshake to before the close.
eng = sum(v["elapsed_secs"] for v in reps) / len(reps)
print(f"{scen}\tfsync-repl engine time (its --json, mean of {len(reps)} runs)\t{ms(eng)} "
      f"= {eng / f['mean']:.0%} of wall\t-\t-\t-\t-")
backed = [v for v in reps if v.get("rate_changes", 0) or v.get("throttled_secs", 0) > 0.01]
if backed:
    worst = max(backed, key=lambda v: v["elapsed_secs"])
    print(f"{scen}\tfsync-repl runs its adaptive back-off/throttle slowed\t{len(backed)} of {len(reps)} "
          f"(slowest: {worst['elapsed_secs']:.1f} s, {worst.get('rate_changes', 0)} rate changes)\t-\t-\t-\t-")
EOF
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- default corpus
log "corpus: corpus make (default: 8 users, ~16k files, 437 MB)"
SRC=$(make_tree homes)
"$CORPUS" describe "$SRC" >&2
D1=$RWORK/d1 D2=$RWORK/d2

if want initial; then
    log "initial: copy into an empty remote destination"
    bench initial 0.8 \
        "$(on_remote "rm -rf $(q "$D1")")" "$(fr "$SRC" "$D1")" \
        "$(on_remote "rm -rf $(q "$D2")")" "$(rs "$SRC" "$D2")"
    verify "initial fsync-repl" "$SRC" "$D1"
    verify "initial rsync" "$SRC" "$D2"
fi

if want nochange; then
    log "nochange: re-run with complete destinations"
    bash -c "$(fr "$SRC" "$D1")" >/dev/null
    bash -c "$(rs "$SRC" "$D2")"
    bench nochange 0.7 "" "$(fr "$SRC" "$D1")" "" "$(rs "$SRC" "$D2")"
    verify "nochange fsync-repl" "$SRC" "$D1"
    verify "nochange rsync" "$SRC" "$D2"
fi

if want mutate; then
    log "mutate: corpus mutate (a day of use) on a copy of the source, then push --delete"
    SRCM=$WORK/homes-mutated
    PRISTINE=$RWORK/pristine
    rm -rf "$SRCM"
    cp -a "$SRC" "$SRCM"
    "$CORPUS" mutate "$SRCM" >&2
    "$CORPUS" describe "$SRCM" >&2
    # The un-mutated replica both destinations are restored to before every run.
    if [[ $LOCAL_TARGET == 1 ]]; then
        rm -rf "$PRISTINE" && cp -a "$SRC" "$PRISTINE"
    else
        rsync -a -H --delete -e "$SSHP" "$SRC/" "$SSH_HOST:$PRISTINE/"
    fi
    verify "mutate pristine replica" "$SRC" "$PRISTINE"
    restore() { on_remote "rm -rf $(q "$1") && cp -a $(q "$PRISTINE") $(q "$1")"; }
    bench mutate 0.6 \
        "$(restore "$D1")" "$(fr --delete "$SRCM" "$D1")" \
        "$(restore "$D2")" "$(rs --delete "$SRCM" "$D2")"
    verify "mutate fsync-repl" "$SRCM" "$D1"
    verify "mutate rsync" "$SRCM" "$D2"

    log "mutate: bytes over the wire (one untimed run each, through the counting wrapper)"
    bash -c "$(restore "$D1")"
    bash -c "$(restore "$D2")"
    # shellcheck disable=SC2086 # FR_OPTS is a list of words
    COUNT=$WORK/wire-fr $FSYNC_REPL push -q --json $FR_OPTS --delete --rsh "$WORK/count-ssh $SSH_WORDS" \
        --port "$SSH_PORT" --remote-bin "$RBIN" "$SRCM" "$SSH_HOST:$D1" >"$WORK/mutate-fr.json"
    COUNT=$WORK/wire-rs rsync -a -H --delete --stats -e "$WORK/count-ssh $SSHP" \
        "$SRCM/" "$SSH_HOST:$D2/" >"$WORK/mutate-rsync.txt"
    verify "mutate bytes fsync-repl" "$SRCM" "$D1"
    verify "mutate bytes rsync" "$SRCM" "$D2"
    python3 - "$WORK/mutate-fr.json" "$WORK/mutate-rsync.txt" \
        "$(counted "$WORK/wire-fr.up")" "$(counted "$WORK/wire-fr.down")" \
        "$(counted "$WORK/wire-rs.up")" "$(counted "$WORK/wire-rs.down")" >>"$SUMMARY" <<'EOF'
import json, re, sys
fr = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
text = open(sys.argv[2]).read()
def stat(name):
    m = re.search(name + r": ([\d,.]+)", text)
    return int(re.sub(r"[,.]", "", m.group(1)))
rs_sent, rs_recv = stat("Total bytes sent"), stat("Total bytes received")
fr_up, fr_down, rs_up, rs_down = map(int, sys.argv[3:7])
# Both figures from the same counting wrapper, outside either tool.
ratio = fr_up / rs_up
print(f"mutate\twire bytes sent (client -> server)\t{fr_up} B\t{rs_up} B (--stats says {rs_sent} B)\t"
      f"{ratio:.3f}\t<= 0.05\t" + ("pass" if ratio <= 0.05 else "FAIL"))
print(f"mutate\twire bytes received (server -> client)\t{fr_down} B\t{rs_down} B (--stats says {rs_recv} B)\t"
      f"{fr_down / max(rs_down, 1):.3f}\t-\t-")
print(f"mutate\twire bytes both ways (wrapper)\t{fr_up + fr_down} B\t{rs_up + rs_down} B\t"
      f"{(fr_up + fr_down) / (rs_up + rs_down):.3f}\t-\t-")
print(f"mutate\tfsync-repl report\tliteral {fr['bytes_literal']} B, matched {fr['bytes_matched']} B, "
      f"moved {fr['bytes_moved']} B; {fr['created']} created, {fr['updated']} updated, "
      f"{fr['deleted']} deleted, {fr['moved']} moved\t-\t-\t-\t-")
print(f"mutate\trsync --stats\t-\t{stat('Total transferred file size')} B transferred file size, "
      f"{stat('Literal data')} B literal, {stat('Matched data')} B matched\t-\t-\t-")
EOF
    sed 's/^/   /' "$WORK/mutate-fr.json" >&2
    grep -E 'Number of (regular )?files transferred|Total (transferred file size|bytes)|Literal data|Matched data' \
        "$WORK/mutate-rsync.txt" | sed 's/^/   rsync: /' >&2
fi

# ---------------------------------------------------------------- summary
echo
echo "load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews both tools)"
echo "fsync-repl $("$FSYNC_REPL" --version 2>/dev/null | awk '{print $2}') ($REV) vs $(rsync --version | head -1 | awk '{print "rsync " $3}'), $(ssh -V 2>&1 | cut -d, -f1), $(nproc) cores, target $SSH_HOST:$RWORK ($([[ $LOCAL_TARGET == 1 ]] && echo "throw-away sshd, loopback" || echo "existing host")), scratch on $(df --output=fstype "$WORK" | tail -1), runs=$RUNS+$WARMUP warmup"
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
