//! What a run shows while it works: the output seam ([`Output`]) and the progress bar.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where output goes; the binary decides, tests capture.
pub trait Output: Sync {
    /// A line of itemized output or the plan.
    fn item(&self, line: &str);
    /// A warning or error line.
    fn warn(&self, line: &str);
    /// How to show progress.
    fn progress(&self) -> ProgressMode;
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Off,
    /// A bar redrawn in place on a terminal.
    Terminal,
    /// One plain line a second (logs, pipes).
    Lines,
}

/// Progress as plain lines on stderr, for `--progress` off a terminal.
#[derive(Debug)]
struct PlainLines;

impl indicatif::TermLike for PlainLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        if !s.trim().is_empty() {
            eprintln!("{s}");
        }
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn progress_bar(mode: ProgressMode, bytes: u64, files: u64) -> ProgressBar {
    let (target, template) = match mode {
        _ if bytes == 0 && files == 0 => return ProgressBar::hidden(),
        ProgressMode::Off => return ProgressBar::hidden(),
        ProgressMode::Terminal => (
            ProgressDrawTarget::stderr(),
            "{msg} {binary_bytes}/{binary_total_bytes} {wide_bar} {binary_bytes_per_sec} ETA {eta}",
        ),
        ProgressMode::Lines => (
            ProgressDrawTarget::term_like_with_hz(Box::new(PlainLines), 1),
            "progress: {msg}, {binary_bytes}/{binary_total_bytes}, {binary_bytes_per_sec}, ETA {eta}",
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(bytes), target);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("0/{files} files"));
    bar
}
