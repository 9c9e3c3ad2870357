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

/// The repository passphrase. `confirm` asks twice at a prompt (for `init`).
pub fn passphrase(global: &Global, confirm: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if let Some(p) = std::env::var_os("COFFER_PASSWORD") {
        return Ok(Zeroizing::new(
            std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec(),
        ));
    }
    if let Some(f) = &global.password_file {
        let bytes = Zeroizing::new(
            std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?,
        );
        return Ok(first_line(&bytes));
    }
    if let Some(cmd) = &global.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running --password-command")?;
        if !out.status.success() {
            bail!("--password-command failed with {}", out.status);
        }
        return Ok(first_line(&Zeroizing::new(out.stdout)));
    }
    prompt("Repository passphrase: ", confirm)
}

/// A new passphrase for `key add` / `key passwd`.
pub fn new_passphrase(file: Option<&std::path::Path>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if let Some(p) = std::env::var_os("COFFER_NEW_PASSWORD") {
        return Ok(Zeroizing::new(
            std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec(),
        ));
    }
    if let Some(f) = file {
        let bytes = Zeroizing::new(
            std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?,
        );
        return Ok(first_line(&bytes));
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
