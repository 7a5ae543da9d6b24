//! The options of a replication run: plain values the engine runs on.
//!
//! Core code never sees clap: `cli` converts its arguments into [`Options`], and a
//! backup job of the config file produces the same value.

/// How temporary files are made durable before they are renamed into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// Write a batch of temporary files, `syncfs` the destination once, then rename them.
    #[default]
    Batch,
    /// `fsync` each temporary file before its rename.
    File,
    /// No durability barrier (atomic against a crash of this process, not of the machine).
    None,
}

/// How hard a restore or verify may press on the disks.
#[derive(Debug, Clone, Copy)]
pub struct ReadSettings {
    pub bwlimit: Option<u64>,
    pub iops_limit: Option<u32>,
    pub priority: crate::throttle::priority::Priority,
    pub jobs: usize,
    /// `jobs` was given, rather than derived from the cores (a far side derives its own).
    pub jobs_given: bool,
    pub quiet: bool,
}

/// How snapshot and prune work may press on the disk.
#[derive(Debug, Clone, Copy)]
pub struct DiskSettings {
    pub iops_limit: Option<u32>,
    pub priority: crate::throttle::priority::Priority,
    pub jobs: usize,
    /// `jobs` was given, rather than derived from the cores (a far side derives its own).
    pub jobs_given: bool,
    pub quiet: bool,
}

/// Options of a replication run. Every field is documented by its `push` flag.
#[derive(Debug, Clone)]
pub struct Options {
    /// Remove destination entries the source no longer has.
    pub delete: bool,
    /// Also remove destination entries that the filters exclude.
    pub delete_excluded: bool,
    /// Compare content hashes rather than size and mtime.
    pub checksum: bool,
    /// Exclude patterns (gitignore syntax), from `--exclude` and `--exclude-from`.
    pub excludes: Vec<String>,
    /// Stay on the source root's filesystem.
    pub one_file_system: bool,
    /// Replicate extended attributes.
    pub xattrs: bool,
    /// Use rolling-checksum deltas for files that exist in the destination.
    pub delta: bool,
    /// Always copy changed files whole (`--whole-file`): no deltas, even over the wire.
    pub whole_file: bool,
    /// Compress file data and deltas on the wire (remote transfers only).
    pub compress: bool,
    /// Keep owners as numeric ids (always so locally; passed to a far side).
    pub numeric_ids: bool,
    /// Worker threads.
    pub jobs: usize,
    /// `jobs` was given (`--jobs`), rather than derived from the cores.
    pub jobs_given: bool,
    /// Free space to keep on the destination (`None`: [`crate::space::default_reserve`]).
    pub min_free: Option<crate::space::Reserve>,
    /// Durability before rename.
    pub fsync: FsyncMode,
    /// Byte-rate limit on disk reads and writes, bytes per second.
    pub bwlimit: Option<u64>,
    /// Limit on metadata operations per second.
    pub iops_limit: Option<u32>,
    /// CPU and I/O priority of every thread.
    pub priority: crate::throttle::priority::Priority,
    /// Adaptive back-off (`None`: `--no-adaptive`).
    pub adaptive: Option<crate::throttle::adaptive::Config>,
    /// Plan only.
    pub dry_run: bool,
    /// One line per change.
    pub itemize: bool,
    /// Progress bar even off a terminal.
    pub progress: bool,
    /// JSON summary.
    pub json: bool,
    /// Errors only.
    pub quiet: bool,
    /// Verbosity level.
    pub verbose: u8,
    /// Preserve owners (true when running as root).
    pub owners: bool,
    /// Recreate devices, FIFOs and sockets (true when running as root).
    pub specials: bool,
    /// Files per durability batch.
    pub batch_files: usize,
    /// Bytes per durability batch.
    pub batch_bytes: u64,
    /// Entries listed, planned and copied at a time when a new subtree is copied in
    /// pieces (an initial copy), and about the entries of one group of a remote
    /// comparison: what bounds their memory.
    pub piece_entries: usize,
    /// Leave what the run reads and writes in the page cache (`--keep-cache`).
    pub keep_cache: bool,
    /// The most a run may delete (`None`: the default rule of [`crate::guard`]).
    pub max_delete: Option<crate::guard::DeleteLimit>,
    /// Take a source that is not the one the replica was made from, and record it.
    pub accept_new_source: bool,
    /// Entries the whole DEST holds, for a run that lists only a part of it (watch
    /// batches): the mass-delete guard weighs deletes against all of DEST.
    pub dest_entries: Option<u64>,
    /// Only this part of both trees (set by watch mode for each batch; no flag).
    pub scope: Option<std::sync::Arc<crate::scope::Scope>>,
    /// Once set, nothing new starts: the files being copied finish and are put in
    /// place, and the run ends as interrupted (watch mode's SIGTERM; no flag).
    pub drain: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Refuse a destination root that is a symlink (backup's `DEST/current`, which a
    /// planted link must not lead outside DEST).
    pub no_follow_dest: bool,
}

impl Default for Options {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        Options {
            delete: false,
            delete_excluded: false,
            checksum: false,
            excludes: Vec::new(),
            one_file_system: false,
            xattrs: false,
            delta: false,
            whole_file: false,
            compress: false,
            numeric_ids: false,
            jobs: 2,
            jobs_given: false,
            min_free: None,
            fsync: FsyncMode::Batch,
            bwlimit: None,
            iops_limit: None,
            priority: Default::default(),
            adaptive: Some(Default::default()),
            dry_run: false,
            itemize: false,
            progress: false,
            json: false,
            quiet: false,
            verbose: 0,
            owners: root,
            specials: root,
            batch_files: 2048,
            batch_bytes: 256 << 20,
            piece_entries: 1 << 16,
            scope: None,
            drain: None,
            max_delete: None,
            keep_cache: false,
            accept_new_source: false,
            dest_entries: None,
            no_follow_dest: false,
        }
    }
}

impl Options {
    /// Settles what going over the wire implies, unless the user said otherwise:
    /// deltas (the link, not the disk, is the bottleneck) and four times the workers,
    /// so that many files in flight hide the link's latency. Every remote push, the far
    /// side of a pull and a watch into a remote DEST take their defaults from here.
    pub fn settle_for_wire(&mut self) {
        self.delta = !self.whole_file;
        if !self.jobs_given {
            self.jobs = self.jobs.max(1) * 4;
        }
    }

    /// Settles what mirroring implies (watch and backup): what SRC no longer has goes
    /// from DEST, so renames and deletes reach the replica.
    pub fn settle_for_mirror(&mut self) {
        self.delete = true;
    }
}

/// Worker threads when `--jobs` is not given: one per core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
