//! Producing a temporary file's data: a reflink, `copy_file_range` over the data
//! segments, read/write, or a delta against the older version; every byte through the
//! throttle.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;

use rustix::fs as rfs;

use super::LocalDest;
use crate::cache::Tracked;
use crate::delta;
use crate::dest::{DataStats, PutError};
use crate::fsutil;
use crate::source::SourceFile;

impl LocalDest {
    /// Writes the whole of `src` into `out`: a reflink when possible, else
    /// copy_file_range over the data segments (holes stay holes), else read/write.
    pub(super) fn copy_whole(&self, src: &SourceFile, out: &File) -> Result<DataStats, PutError> {
        let mut stats = DataStats::default();
        if src.size == 0 {
            return Ok(stats);
        }
        // A clone shares the data's extents and moves no bytes, so no byte budget
        // holds it back: it costs one metadata operation.
        if src.dev == self.dev && self.reflink_ok.load(Ordering::Relaxed) {
            match rfs::ioctl_ficlone(out, &src.file) {
                Ok(()) => {
                    self.throttle.op();
                    stats.cloned = src.size;
                    return Ok(stats);
                }
                Err(_) => self.reflink_ok.store(false, Ordering::Relaxed),
            }
        }
        if !src.sparse {
            self.copy_range(src, out, 0, src.size)?;
            stats.literal = src.size;
            return Ok(stats);
        }
        // Holes stay holes: copy the data segments only, then set the length.
        for (start, end) in data_segments(&src.file, src.size)? {
            self.copy_range(src, out, start, end)?;
            stats.literal += end - start;
        }
        rfs::ftruncate(out, src.size).map_err(|e| PutError::dest("truncate")(e.into()))?;
        Ok(stats)
    }

    pub(super) fn copy_range(
        &self,
        src: &SourceFile,
        out: &File,
        start: u64,
        end: u64,
    ) -> Result<(), PutError> {
        let mut off_in = start;
        let mut off_out = start;
        while off_in < end {
            if self.cancelled() {
                return Err(PutError::Interrupted);
            }
            // The chunk follows the rate in force, which the controller may change.
            let want = (end - off_in).min(self.throttle.chunk() as u64) as usize;
            self.throttle.bytes(want as u64);
            let copied = self.throttle.io(|| {
                rfs::copy_file_range(&src.file, Some(&mut off_in), out, Some(&mut off_out), want)
            });
            match copied {
                Ok(0) => return Err(PutError::SourceChanged),
                Ok(_) => {}
                Err(
                    e @ (rustix::io::Errno::XDEV
                    | rustix::io::Errno::INVAL
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::OPNOTSUPP),
                ) => {
                    let _ = e;
                    return self.read_write(src, out, off_in, end);
                }
                Err(e) if fsutil::is_no_space(&e.into()) => return Err(PutError::NoSpace),
                Err(rustix::io::Errno::IO) => {
                    return Err(PutError::Source(io::Error::from(rustix::io::Errno::IO)))
                }
                Err(e) => return Err(PutError::dest("copy_file_range")(e.into())),
            }
        }
        Ok(())
    }

    fn read_write(&self, src: &SourceFile, out: &File, off: u64, end: u64) -> Result<(), PutError> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; (self.throttle.chunk()).min(1 << 20)];
        read_chunks(src, &self.throttle, (off, end), &mut buf, |at, data| {
            self.throttle
                .io(|| out.write_all_at(data, at))
                .map_err(PutError::dest("write"))
        })
    }

    /// Rebuilds the file from the destination's old version with rsync deltas; falls
    /// back to a whole copy when the result does not hash like the source.
    pub(super) fn copy_delta(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        src: &SourceFile,
        out: &mut File,
    ) -> Result<DataStats, PutError> {
        // The basis is opened only if it is a regular file: never a FIFO or a device.
        let old = match fsutil::open_regular(dir, name) {
            Ok((fd, st)) => Tracked::new(File::from(fd), st.st_size as u64, self.keep_cache),
            Err(_) => return self.copy_whole(src, out),
        };
        let old_len = old.metadata().map(|m| m.len()).unwrap_or(0);
        if old_len == 0 || src.size == 0 || src.sparse {
            // Nothing to reuse, or holes a delta would fill in: copy whole.
            return self.copy_whole(src, out);
        }
        let mut w = io::BufWriter::with_capacity(1 << 20, &mut *out);
        let result = self.delta_windows(&old, old_len, src, &mut w);
        let flushed = w.flush();
        drop(w);
        match (result, flushed) {
            (Ok(Some(st)), Ok(())) => Ok(st),
            (Err(e), _) => Err(e),
            (_, Err(e)) if fsutil::is_no_space(&e) => Err(PutError::NoSpace),
            _ => {
                // The rebuilt bytes did not hash like the source: copy whole instead.
                out.set_len(0).map_err(PutError::dest("truncate"))?;
                out.seek(SeekFrom::Start(0))
                    .map_err(PutError::dest("seek"))?;
                self.copy_whole(src, out)
            }
        }
    }

    /// Rebuilds the source from `old` window by window, each window mapped on its own so
    /// memory stays bounded whatever the file size. `Ok(None)`: the result's BLAKE3
    /// differs from the source's (the caller copies whole).
    fn delta_windows(
        &self,
        old: &File,
        old_len: u64,
        src: &SourceFile,
        out: &mut impl Write,
    ) -> Result<Option<DataStats>, PutError> {
        let params = delta::SigParams::for_len(src.size.min(delta::DEFAULT_WINDOW as u64));
        let (mut want, mut got) = (blake3::Hasher::new(), blake3::Hasher::new());
        let mut stats = DataStats::default();
        let mut buf = Vec::new();
        for win in delta::windows(src.size, old_len, delta::DEFAULT_WINDOW) {
            if self.cancelled() {
                return Err(PutError::Interrupted);
            }
            let base = map_range(old, &win.base).map_err(PutError::dest("map old version"))?;
            let new = source_range(&src.file, &win.new)?;
            self.throttle.bytes(base.len() as u64 + new.len() as u64);
            want.update(&new);
            let sig = delta::signature(&base, params).map_err(delta_err)?;
            buf.clear();
            delta::diff(&sig, &new, &mut buf).map_err(delta_err)?;
            let mut tee = Tee {
                out: &mut *out,
                hasher: &mut got,
            };
            let st = match delta::apply(&base, &buf, &mut tee, new.len()) {
                Ok(st) => st,
                Err(delta::DeltaError::Io(e)) => return Err(PutError::dest("write")(e)),
                Err(_) => return Ok(None),
            };
            stats.literal += st.literal;
            stats.matched += st.matched;
        }
        Ok((want.finalize() == got.finalize()).then_some(stats))
    }
}

/// Ranges up to this size are read rather than mapped: for a small range, mapping,
/// faulting its pages in and unmapping cost more than a copy (most files of a source
/// tree are small).
const READ_RANGE_MAX: u64 = 128 << 10;

/// `range` of `file`, read-only: read into memory when small, else mapped (empty
/// ranges give an empty slice). A short read (the file shrank) is an error.
pub fn map_range(file: &File, range: &std::ops::Range<u64>) -> io::Result<MapOrEmpty> {
    use std::os::unix::fs::FileExt;
    if range.is_empty() {
        return Ok(MapOrEmpty::Read(Vec::new()));
    }
    let len = range.end - range.start;
    if len <= READ_RANGE_MAX {
        let mut buf = vec![0; len as usize];
        file.read_exact_at(&mut buf, range.start)?;
        return Ok(MapOrEmpty::Read(buf));
    }
    // SAFETY: a read-only map, dropped before the next window. A concurrent truncation
    // of the file could raise SIGBUS, as with any mmap-based reader.
    let m = unsafe {
        memmap2::MmapOptions::new()
            .offset(range.start)
            .len(len as usize)
            .map(file)?
    };
    Ok(MapOrEmpty::Map(m))
}

/// [`map_range`] of a source file: one that shrank since it was opened changed under
/// the copy (it is tried again), any other failure is the source's.
pub fn source_range(file: &File, range: &std::ops::Range<u64>) -> Result<MapOrEmpty, PutError> {
    map_range(file, range).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => PutError::SourceChanged,
        _ => PutError::Source(e),
    })
}

/// A range of a file: mapped, or read into memory (small or empty ranges).
pub enum MapOrEmpty {
    Map(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for MapOrEmpty {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            MapOrEmpty::Map(m) => m,
            MapOrEmpty::Read(v) => v,
        }
    }
}

/// Writes through to `out` while hashing.
pub struct Tee<'a, W: Write> {
    pub out: &'a mut W,
    pub hasher: &'a mut blake3::Hasher,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn delta_err(e: delta::DeltaError) -> PutError {
    PutError::Dest {
        op: "delta",
        err: io::Error::other(e.to_string()),
    }
}

/// Reads `range` (start, end) of a source file through the throttle, a buffer at a
/// time, handing each piece and its offset to `put`. A file that ends early has changed.
pub fn read_chunks(
    src: &SourceFile,
    throttle: &crate::throttle::Throttle,
    (mut off, end): (u64, u64),
    buf: &mut [u8],
    mut put: impl FnMut(u64, &[u8]) -> Result<(), PutError>,
) -> Result<(), PutError> {
    use std::os::unix::fs::FileExt;
    while off < end {
        let want = ((end - off) as usize).min(buf.len());
        let n = throttle
            .io(|| src.file.read_at(&mut buf[..want], off))
            .map_err(PutError::Source)?;
        if n == 0 {
            return Err(PutError::SourceChanged);
        }
        throttle.bytes(n as u64);
        put(off, &buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// The data segments of a sparse file, found with SEEK_DATA / SEEK_HOLE.
pub fn data_segments(f: &File, size: u64) -> Result<Vec<(u64, u64)>, PutError> {
    let mut segs = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rfs::seek(f, rfs::SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return Ok(vec![(pos, size)]),
        };
        let end = rfs::seek(f, rfs::SeekFrom::Hole(start))
            .map_err(|e| PutError::Source(e.into()))?
            .min(size);
        if end > start {
            segs.push((start, end));
        }
        pos = end;
    }
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_read_when_small_and_mapped_when_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(READ_RANGE_MAX as u32 * 3))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let small = map_range(&file, &(100..4196)).unwrap();
        assert!(matches!(small, MapOrEmpty::Read(_)));
        assert_eq!(&small[..], &data[100..4196]);
        let large = map_range(&file, &(1..data.len() as u64)).unwrap();
        assert!(matches!(large, MapOrEmpty::Map(_)));
        assert_eq!(&large[..], &data[1..]);
        assert!(map_range(&file, &(5..5)).unwrap().is_empty());
        // A file that shrank under a small range is an error, not a fault.
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        writer.set_len(1000).unwrap();
        assert!(map_range(&file, &(500..4000)).is_err());
    }
}
