//! The man pages, rendered from the clap definitions.

use clap::CommandFactory;

use super::Cli;

/// Renders the man pages from the clap definitions: `fsync-repl.1` for the tool and
/// one `fsync-repl-<command>.1` per subcommand, as (file name, contents) pairs.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let cmd = Cli::command();
    let mut pages = vec![("fsync-repl.1".to_string(), render(cmd.clone()))];
    for sub in cmd.get_subcommands() {
        let name = format!("fsync-repl-{}", sub.get_name());
        let page = render(
            sub.clone()
                .name(name.clone())
                .version(env!("CARGO_PKG_VERSION")),
        );
        pages.push((format!("{name}.1"), page));
    }
    pages
}

fn render(cmd: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    // A Vec<u8> sink cannot fail.
    let _ = clap_mangen::Man::new(cmd).render(&mut out);
    out
}
