//! What crosses the wire on a remote run: small edited files travel as deltas and land
//! byte for byte; a listing costs a few bytes an entry; compression and the old
//! protocol's refusal.

mod common;
use common::*;

/// Text like a source file's, `n` lines, different for each `seed`.
fn source_text(seed: u32, n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let x = (seed.wrapping_mul(2654435761) ^ i.wrapping_mul(40503)) % 1000;
        out.extend_from_slice(
            format!("    def method_{i}(self, value_{x}):\n        return value_{x} * {i}\n")
                .as_bytes(),
        );
    }
    out
}

/// One line changed in the middle.
fn edited(text: &[u8]) -> Vec<u8> {
    let mut t = text.to_vec();
    let mid = t.len() / 2;
    t.splice(mid..mid, b"# edited\n".iter().copied());
    t
}

fn tree_of_small_files(n: u32) -> (Tree, u64) {
    let src = Tree::new();
    let mut total = 0;
    for i in 0..n {
        // From 2 KiB to about 40 KiB.
        let text = source_text(i, 30 + (i * 37) % 700);
        total += text.len() as u64;
        src.file(format!("pkg{}/mod_{i}.py", i % 7), &text);
    }
    (src, total)
}

#[test]
fn small_edited_files_travel_as_deltas_and_land_exact() {
    for compress in [false, true] {
        let (src, total) = tree_of_small_files(120);
        let dst = Tree::new();
        let z: &[&str] = if compress { &["-z"] } else { &[] };
        push_ok(Transport::Rsh, src.path(), &dst.join("r"), z);
        for i in 0..120 {
            let p = format!("pkg{}/mod_{i}.py", i % 7);
            src.file(&p, &edited(&src.read(&p)))
                .mtime(&p, 1_700_000_000, 0);
        }
        let args: Vec<&str> = ["--json"].iter().chain(z).copied().collect();
        let (out, sent) = push_counted(src.path(), &dst.join("r"), &args);
        assert_same_tree(src.path(), &dst.join("r"));
        let v = json(&out);
        assert_eq!(v["updated"], 120, "{v}");
        assert!(v["bytes_matched"].as_u64().unwrap() > total / 2, "{v}");
        // Each file costs its name, a block of literal data and the commands: far less
        // than the files themselves.
        assert!(
            sent < total / 4,
            "{sent} bytes sent for {total} bytes of files: {v}"
        );
    }
}

#[test]
fn a_small_file_whose_basis_is_gone_goes_whole_and_exact() {
    let (src, _) = tree_of_small_files(10);
    let dst = Tree::new();
    push_ok(Transport::Rsh, src.path(), &dst.join("r"), &[]);
    // DEST's copy becomes unrelated bytes of the same size: no block matches.
    let p = "pkg3/mod_3.py";
    let len = src.read(p).len();
    std::fs::write(dst.join("r").join(p), vec![b'#'; len]).unwrap();
    set_mtime(&dst.join("r").join(p), 1_600_000_000, 0);
    src.file(p, &edited(&src.read(p)))
        .mtime(p, 1_700_000_000, 0);
    let out = push_ok(Transport::Rsh, src.path(), &dst.join("r"), &["--json"]);
    assert_same_tree(src.path(), &dst.join("r"));
    assert_eq!(json(&out)["updated"], 1);
}

#[test]
fn a_listing_costs_a_few_bytes_an_entry() {
    let src = Tree::new();
    let n = 3000;
    for i in 0..n {
        src.file(format!("lib/part{}/module_{i:05}.py", i / 100), b"x = 1\n");
    }
    let dst = Tree::new();
    push_ok(Transport::Rsh, src.path(), &dst.join("r"), &[]);
    let out = push_ok(Transport::Rsh, src.path(), &dst.join("r"), &["--json"]);
    let v = json(&out);
    assert_eq!(v["created"], 0, "{v}");
    let received = v["wire_bytes_received"].as_u64().unwrap();
    // The far side's listing of 3,000 files and 31 directories, and its answers.
    assert!(received < 10 * n, "{received} bytes received: {v}");
}
