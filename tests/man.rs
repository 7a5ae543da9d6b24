//! The man pages in man/ are generated from the clap definitions. Regenerate with
//! `FSYNC_REPL_BLESS_MAN=1 cargo test --test man`; this test fails when they drift.

use std::path::Path;

#[test]
fn man_pages_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let bless = std::env::var_os("FSYNC_REPL_BLESS_MAN").is_some();
    let mut stale = Vec::new();
    for (name, page) in fsync_repl::cli::man_pages() {
        let path = dir.join(&name);
        if bless {
            std::fs::create_dir_all(&dir).expect("create man/");
            std::fs::write(&path, &page).expect("write man page");
        } else if std::fs::read(&path).ok().as_deref() != Some(&page[..]) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "man pages out of date: {stale:?}; run FSYNC_REPL_BLESS_MAN=1 cargo test --test man"
    );
}

#[test]
fn man_page_documents_exit_codes_and_push() {
    let pages = fsync_repl::cli::man_pages();
    let main = String::from_utf8_lossy(&pages[0].1).into_owned();
    assert!(main.contains("fsync\\-repl"), "title");
    assert!(main.contains("24"), "exit code table present");
    assert!(pages.iter().any(|(n, _)| n == "fsync-repl-push.1"));
}
