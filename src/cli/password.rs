//! Where the passphrase comes from: `COFFER_PASSWORD`, a file, a command, or a prompt on a
//! terminal. Never from the command line itself, so it does not show in `ps`.

use std::io::IsTerminal;

use anyhow::{Context, bail};
use zeroize::Zeroizing;

use super::args::Global;

fn first_line(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(b"");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Zeroizing::new(line.to_vec())
}

/// Where a passphrase came from, for messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Env,
    FileFlag,
    FileEnv,
    CommandFlag,
    CommandEnv,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Env => "COFFER_PASSWORD",
            Source::FileFlag => "--password-file",
            Source::FileEnv => "COFFER_PASSWORD_FILE",
            Source::CommandFlag => "--password-command",
            Source::CommandEnv => "COFFER_PASSWORD_COMMAND",
        }
    }

    fn explicit(self) -> bool {
        matches!(self, Source::FileFlag | Source::CommandFlag)
    }
}

/// The sources given, the one to use first: an explicit flag wins over the environment, and
/// among the variables `COFFER_PASSWORD` wins (as before); the others are named in a warning.
fn sources(global: &Global) -> anyhow::Result<Vec<Source>> {
    let env_is = |k: &str, v: &std::ffi::OsStr| std::env::var_os(k).is_some_and(|e| e == v);
    let mut out = Vec::new();
    if let Some(f) = &global.password_file {
        out.push(if env_is("COFFER_PASSWORD_FILE", f.as_os_str()) {
            Source::FileEnv
        } else {
            Source::FileFlag
        });
    }
    if let Some(c) = &global.password_command {
        out.push(
            if env_is("COFFER_PASSWORD_COMMAND", std::ffi::OsStr::new(c)) {
                Source::CommandEnv
            } else {
                Source::CommandFlag
            },
        );
    }
    if std::env::var_os("COFFER_PASSWORD").is_some() {
        out.push(Source::Env);
    }
    let explicit: Vec<Source> = out.iter().copied().filter(|s| s.explicit()).collect();
    if explicit.len() > 1 {
        bail!("give one of --password-file and --password-command, not both");
    }
    out.sort_by_key(|s| match s {
        s if s.explicit() => 0,
        Source::Env => 1,
        _ => 2,
    });
    if out.len() > 1 {
        let ignored: Vec<&str> = out[1..].iter().map(|s| s.name()).collect();
        eprintln!(
            "warning: the passphrase is taken from {}; {} {} ignored",
            out[0].name(),
            ignored.join(" and "),
            if ignored.len() == 1 { "is" } else { "are" }
        );
    }
    Ok(out)
}

/// Refuse an empty passphrase, naming where it came from.
fn non_empty(p: Zeroizing<Vec<u8>>, from: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if p.is_empty() {
        bail!("the passphrase from {from} is empty: an empty passphrase protects nothing");
    }
    Ok(p)
}

/// The repository passphrase. `confirm` asks twice at a prompt (for `init`).
pub fn passphrase(global: &Global, confirm: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let Some(&source) = sources(global)?.first() else {
        return prompt("Repository passphrase: ", confirm);
    };
    let p = match source {
        Source::Env => Zeroizing::new(
            std::env::var_os("COFFER_PASSWORD")
                .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
                .unwrap_or_default(),
        ),
        Source::FileFlag | Source::FileEnv => {
            let f = global
                .password_file
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            let bytes = Zeroizing::new(
                std::fs::read(f)
                    .with_context(|| format!("reading password file {}", f.display()))?,
            );
            first_line(&bytes)
        }
        Source::CommandFlag | Source::CommandEnv => {
            let cmd = global.password_command.as_deref().unwrap_or_default();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stderr(std::process::Stdio::inherit())
                .output()
                .context("running --password-command")?;
            if !out.status.success() {
                bail!("--password-command failed with {}", out.status);
            }
            first_line(&Zeroizing::new(out.stdout))
        }
    };
    non_empty(p, source.name())
}

/// A new passphrase for `key add` / `key passwd`.
pub fn new_passphrase(file: Option<&std::path::Path>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = file {
        let bytes = Zeroizing::new(
            std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?,
        );
        return non_empty(first_line(&bytes), &f.display().to_string());
    }
    if let Some(p) = std::env::var_os("COFFER_NEW_PASSWORD") {
        return non_empty(
            Zeroizing::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec()),
            "COFFER_NEW_PASSWORD",
        );
    }
    prompt("New passphrase: ", true)
}

fn prompt(label: &str, confirm: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no passphrase: set COFFER_PASSWORD, COFFER_PASSWORD_FILE or --password-command \
             (no terminal to prompt on)"
        );
    }
    let p = Zeroizing::new(rpassword::prompt_password(label).context("reading the passphrase")?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Enter it again: ")?);
        if *again != *p {
            bail!("the passphrases do not match");
        }
    }
    if p.is_empty() {
        bail!("an empty passphrase is not allowed");
    }
    Ok(Zeroizing::new(p.as_bytes().to_vec()))
}
