//! Temporary files of a destination: the names the destination gives them, which scan,
//! plan and snapshot recognise (and skip or clean up), and a written file waiting for
//! its rename.

/// Marker inside the names of temporary files this tool creates.
pub const MARKER: &[u8] = b".fsync-tmp.";

/// True for names of this tool's temporary files: `.<name>.fsync-tmp.<random>`.
pub fn is_temp_name(name: &[u8]) -> bool {
    name.first() == Some(&b'.') && name.windows(MARKER.len()).any(|w| w == MARKER)
}

/// The temporary name of the `n`th file a destination writes for `name`:
/// `.<name>.fsync-tmp.<salt and n in hex>`, cut to stay within NAME_MAX (255 bytes).
pub fn name(name: &[u8], salt: u32, n: u64) -> Vec<u8> {
    use std::io::Write;
    // The marker, then 8 + 4 hex digits.
    const TAG: usize = MARKER.len() + 12;
    let keep = name.len().min(255 - 1 - TAG);
    let mut t = Vec::with_capacity(1 + keep + TAG);
    t.push(b'.');
    t.extend_from_slice(&name[..keep]);
    t.extend_from_slice(MARKER);
    // Writing into a Vec cannot fail; it has the room already.
    let _ = write!(
        t,
        "{:08x}{:04x}",
        salt ^ (n as u32).rotate_left(16),
        n & 0xffff
    );
    t
}

/// A temporary file written and waiting for its rename into `dir/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Staged {
    pub dir: Vec<u8>,
    pub tmp: Vec<u8>,
    pub name: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised() {
        assert!(is_temp_name(b".a.txt.fsync-tmp.x1y2"));
        assert!(!is_temp_name(b"a.txt.fsync-tmp.x1y2"));
        assert!(!is_temp_name(b".bashrc"));
    }

    #[test]
    fn made_names_are_recognised_and_fit_name_max() {
        for len in [1, 10, 200, 255] {
            let base = vec![b'x'; len];
            let t = name(&base, 0xdead_beef, 7);
            assert!(is_temp_name(&t), "{}", String::from_utf8_lossy(&t));
            assert!(t.len() <= 255);
            assert_ne!(t, name(&base, 0xdead_beef, 8));
        }
    }
}
