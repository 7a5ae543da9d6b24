mod common;
use common::*;

#[test]
fn push_replicates_a_small_tree() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("a/b/c.txt", b"hello")
            .file("top", b"x")
            .symlink("a/l", "b/c.txt");
        let dst = Tree::new();
        let d = dst.join("replica");
        push_ok(t, src.path(), &d, &[]);
        assert_same_tree(src.path(), &d);
    }
}
