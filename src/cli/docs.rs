//! `completion` and `man`: shell completion scripts and man pages generated from the
//! command-line definitions, so they never drift from what the binary accepts.

use std::path::PathBuf;

use clap::{Args, CommandFactory, ValueEnum};

use super::args::{Cli, Global};
use super::exit;

/// A shell to complete for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    /// bash (`coffer completion bash > /etc/bash_completion.d/coffer`).
    Bash,
    /// zsh (`coffer completion zsh > "${fpath[1]}/_coffer"`).
    Zsh,
    /// fish (`coffer completion fish > ~/.config/fish/completions/coffer.fish`).
    Fish,
}

/// `completion`.
#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write `coffer.1` and one page per command (`coffer-backup.1`, ...) into this directory
    /// (e.g. /usr/local/share/man/man1); without it, `coffer.1` goes to stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `coffer completion SHELL`: the completion script on stdout.
pub(super) fn completion(_g: &Global, a: &CompletionArgs) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Generated into memory first: the generator panics on a failed write (a closed pipe),
    // where our own write returns the error and a closed pipe ends the command quietly.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "coffer", &mut script);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &script)?;
    Ok(exit::OK)
}

/// `coffer man [--dir DIR]`.
pub(super) fn man(g: &Global, a: &ManArgs) -> anyhow::Result<u8> {
    let cmd = Cli::command();
    match &a.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), &page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .map_err(|e| anyhow::anyhow!("writing man pages into {}: {e}", dir.display()))?;
            if !g.quiet {
                eprintln!("man pages written to {}", dir.display());
            }
        }
    }
    Ok(exit::OK)
}
