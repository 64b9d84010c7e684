//! `cutover completions SHELL` and `cutover man [--dir D]`: generated at run time from the clap
//! grammar itself (clap_complete, clap_mangen), so neither can fall behind a new command or flag.
//! Rejected: pre-generated files in the repository or a `build.rs`, which go stale or need the
//! grammar in a second crate.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

/// Prints the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "cutover", &mut script);
    std::io::stdout()
        .lock()
        .write_all(&script)
        .context("writing the completion script to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// Prints `cutover(1)` as roff, or writes it and one page per subcommand into `dir`.
pub fn man(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("rendering the manual page")?;
            std::io::stdout()
                .lock()
                .write_all(&page)
                .context("writing the manual page to standard output")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create {}; give --dir a directory you may write to",
                    dir.display()
                )
            })?;
            clap_mangen::generate_to(cmd, dir).with_context(|| {
                format!(
                    "cannot write the manual pages into {}; give --dir a directory you may write to",
                    dir.display()
                )
            })?;
            println!("wrote cutover.1 and a page per subcommand into {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
