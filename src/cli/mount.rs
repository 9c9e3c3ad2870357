//! `coffer mount MOUNTPOINT`: the snapshots as a read-only file system until SIGINT or
//! SIGTERM (or an `umount` from outside), then unmounted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use clap::Args;

use super::args::Global;
use super::commands::{open, print_json, say};
use super::exit;
use crate::engine::mount::{MountOptions, check_mountpoint, mount as run_mount};
use crate::engine::session::release_all_locks;

/// `mount`.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// An empty directory to mount on (`snapshots/`, `ids/`, `hosts/`, `tags/`, `latest`).
    pub mountpoint: PathBuf,
}

/// `coffer mount MOUNTPOINT`: mount, serve until a signal, unmount; exit 0.
pub(super) fn mount(g: &Global, a: &MountArgs) -> anyhow::Result<u8> {
    let (stop, serving) = on_signal();
    // Before the passphrase is asked for.
    check_mountpoint(&a.mountpoint)?;
    let o = open(g)?;
    let opts = MountOptions {
        mountpoint: a.mountpoint.clone(),
    };
    let m = run_mount(o, &opts)?;
    serving.store(true, Ordering::SeqCst);
    say(
        g,
        format!(
            "mounted {} snapshots at {} (read-only); Ctrl-C, SIGTERM or `umount {}` unmounts",
            m.summary().snapshots,
            m.summary().mountpoint,
            m.summary().mountpoint,
        ),
    );
    let s = m.serve_until(&stop)?;
    if g.json {
        print_json(&s)?;
    } else {
        say(g, format!("unmounted {}", s.mountpoint));
    }
    Ok(exit::OK)
}

/// SIGINT and SIGTERM: while serving, the first one unmounts (a message on the channel);
/// before that, or a second time, the process ends as every command's would (its locks
/// removed, exit 130 or 143). A mount with `auto_unmount` goes with the process.
fn on_signal() -> (mpsc::Receiver<()>, Arc<AtomicBool>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (tx, rx) = mpsc::channel();
    let serving = Arc::new(AtomicBool::new(false));
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return (rx, serving);
    };
    let armed = serving.clone();
    std::thread::spawn(move || {
        let mut asked = false;
        for sig in signals.forever() {
            if armed.load(Ordering::SeqCst) && !asked {
                asked = true;
                let _ = tx.send(());
                continue;
            }
            release_all_locks();
            std::process::exit(if sig == SIGINT {
                exit::INTERRUPTED.into()
            } else {
                143
            });
        }
    });
    (rx, serving)
}
