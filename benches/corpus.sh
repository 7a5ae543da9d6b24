# Sourced by the benchmark scripts: builds the project's corpus tool
# (examples/corpus.rs: the generator and tree comparer the tests use) and sets CORPUS
# to it.
#
#   "$CORPUS" make DIR [--users N --small N --medium N --large-mib N --seed S]
#   "$CORPUS" mutate DIR [--seed S]          a day of use
#   "$CORPUS" describe DIR
#   "$CORPUS" compare SRC DEST               exit 1 on any difference
#
# Needs REPO set. CORPUS may be given to use a prebuilt tool.
if [[ -z ${CORPUS:-} ]]; then
    (cd "$REPO" && cargo build --release --quiet --example corpus) ||
        { echo "cargo build --release --example corpus failed" >&2; exit 1; }
    CORPUS=$REPO/target/release/examples/corpus
fi
[[ -x $CORPUS ]] || { echo "corpus tool $CORPUS is not an executable" >&2; exit 1; }
