//! Prune beside running backups (issue 19), through the engine on a real directory: what a
//! marker waits for, what a writer that started before or after it does, and what is deleted
//! in the end. The multi-process runs with kills are in `tests/concurrent.rs`.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use coffer::catalog::Catalog;
use coffer::engine::Progress;
use coffer::engine::backup::{BackupOptions, BackupSummary, SourceSpec, backup};
use coffer::engine::check::{CheckOptions, check};
use coffer::engine::condemn::Readiness;
use coffer::engine::prune::{PruneOptions, PruneSummary, prune};
use coffer::engine::restore::{RestoreOptions, restore};
use coffer::id::SnapshotId;
use coffer::repo::{InitOptions, LockKind, Repository};
use coffer::storage::{LocalStore, ObjectStore};
use common::{Env, assert_trees_equal, pseudo_random};

struct World {
    env: Env,
    repo: Repository,
}

impl World {
    fn new() -> Self {
        let env = Env::new();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(env.path("repo")));
        let opts = InitOptions {
            pack_bytes: 1 << 20,
            kdf: coffer::crypto::KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ..InitOptions::default()
        };
        let repo = Repository::init(store, b"pw", opts).unwrap();
        World { env, repo }
    }

    /// A catalog of its own for each actor (each host has its own cache).
    fn catalog(&self, who: &str) -> Catalog {
        Catalog::open(&self.env.path(format!("cache/{who}.db"))).unwrap()
    }

    fn backup(&self, who: &str, src: &Path) -> BackupSummary {
        let opts = BackupOptions {
            sources: vec![SourceSpec {
                name: "ws".into(),
                path: src.to_path_buf(),
            }],
            host: who.into(),
            ..Default::default()
        };
        backup(&self.repo, &self.catalog(who), &opts, &Progress::default()).unwrap()
    }

    fn prune(&self, grace_secs: u64) -> PruneSummary {
        let opts = PruneOptions {
            max_unused_percent: 0.0,
            grace_secs,
            ..PruneOptions::default()
        };
        prune(
            &self.repo,
            &self.catalog("pruner"),
            &opts,
            &Progress::default(),
        )
        .unwrap()
    }

    fn packs(&self) -> usize {
        self.repo.list_packs().unwrap().len()
    }

    fn assert_sound(&self) {
        let report = check(
            &self.repo,
            &CheckOptions {
                read_data: true,
                ..CheckOptions::default()
            },
            &Progress::default(),
        )
        .unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    fn assert_restores(&self, id: &SnapshotId, expected: &Path) {
        let out = self.env.path(format!("out-{}", id.short()));
        restore(
            &self.repo,
            &self.catalog("restorer"),
            &RestoreOptions {
                snapshot: id.to_hex(),
                target: out.clone(),
                ..Default::default()
            },
            &Progress::default(),
        )
        .unwrap();
        assert_trees_equal(expected, &out.join("ws"));
        fs::remove_dir_all(&out).unwrap();
    }
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_quiet_repository_is_pruned_in_one_run() {
    let w = World::new();
    let src = w.env.path("src");
    write(&src.join("keep.bin"), &pseudo_random(1, 400_000));
    write(&src.join("gone.bin"), &pseudo_random(2, 3_000_000));
    let first = w.backup("a", &src).snapshot_id.unwrap();
    fs::remove_file(src.join("gone.bin")).unwrap();
    let second = w.backup("a", &src).snapshot_id.unwrap();
    w.repo.delete_snapshot(&first).unwrap();
    let before = w.packs();
    let s = w.prune(1800);
    assert!(!s.exclusive);
    assert!(s.packs_condemned > 0, "{s:?}");
    assert_eq!(
        s.markers_done, 1,
        "nobody else held a lock: carried out at once"
    );
    assert!(s.packs_deleted > 0 && w.packs() < before, "{s:?}");
    assert!(w.repo.list_markers().unwrap().is_empty());
    w.assert_sound();
    w.assert_restores(&second, &src);
    // Nothing left to do.
    let again = w.prune(1800);
    assert_eq!((again.packs_condemned, again.packs_deleted), (0, 0));
}

#[test]
fn an_exclusive_prune_carries_out_the_markers_a_shared_one_left() {
    let w = World::new();
    let src = w.env.path("src");
    write(&src.join("a.bin"), &pseudo_random(8, 1_500_000));
    let first = w.backup("a", &src).snapshot_id.unwrap();
    write(&src.join("a.bin"), &pseudo_random(9, 1_500_000));
    let second = w.backup("a", &src).snapshot_id.unwrap();
    let writer = w.repo.lock(LockKind::Shared, "backup").unwrap();
    w.repo.delete_snapshot(&first).unwrap();
    let s = w.prune(0);
    assert!(s.packs_condemned > 0 && s.packs_deleted == 0, "{s:?}");
    drop(writer);
    let packs = w.packs();
    let opts = PruneOptions {
        max_unused_percent: 0.0,
        exclusive: true,
        ..PruneOptions::default()
    };
    let s = prune(&w.repo, &w.catalog("pruner"), &opts, &Progress::default()).unwrap();
    assert!(
        s.exclusive && s.packs_deleted > 0 && w.packs() < packs,
        "{s:?}"
    );
    assert_eq!(s.markers_done, 1, "{s:?}");
    assert!(w.repo.list_markers().unwrap().is_empty());
    w.assert_sound();
    w.assert_restores(&second, &src);
}

#[test]
fn prune_gathers_the_index_files_of_many_backups_into_one() {
    let w = World::new();
    let src = w.env.path("src");
    let mut last = None;
    for n in 0..12u64 {
        write(
            &src.join(format!("night-{n}.bin")),
            &pseudo_random(n, 50_000),
        );
        last = w.backup("a", &src).snapshot_id;
    }
    assert!(w.repo.list_index_files().unwrap().len() >= 12);
    let s = w.prune(1800);
    assert_eq!((s.packs_condemned, s.packs_deleted), (0, 0), "{s:?}");
    assert_eq!(s.index_files_written, 1, "{s:?}");
    assert_eq!(w.repo.list_index_files().unwrap().len(), 1);
    w.assert_sound();
    w.assert_restores(&last.unwrap(), &src);
    // A host with an empty cache lists snapshots without reading the index...
    let lister = w.catalog("lister");
    let stats = lister.refresh_snapshot_list(&w.repo).unwrap();
    assert_eq!((stats.index_files_read, stats.snapshots_read), (0, 12));
    // ... and reads that one file before its first backup.
    let fresh = w.catalog("new-host");
    let stats = fresh.refresh(&w.repo).unwrap();
    assert_eq!(stats.index_files_read, 1);
}

#[test]
fn a_running_writer_is_waited_for_and_what_it_reused_stays() {
    let w = World::new();
    let src = w.env.path("src");
    write(&src.join("shared.bin"), &pseudo_random(3, 300_000));
    write(&src.join("old.bin"), &pseudo_random(4, 2_500_000));
    let first = w.backup("a", &src).snapshot_id.unwrap();
    let first_snapshot = w.repo.load_snapshot(&first).unwrap();
    // A writer of host b started before the prune: it holds its lock, and has already
    // looked up (and will reuse) everything of the first snapshot.
    let writer = w.repo.lock(LockKind::Shared, "backup").unwrap();
    w.repo.delete_snapshot(&first).unwrap();
    let packs_before = w.packs();
    let s = w.prune(0);
    assert!(s.packs_condemned > 0, "{s:?}");
    assert_eq!(
        s.packs_deleted, 0,
        "a marker waits for the live writer: {s:?}"
    );
    assert_eq!(
        s.markers_waiting,
        vec![Readiness::Waiting { sessions: 1 }],
        "{s:?}"
    );
    assert_eq!(w.packs(), packs_before);
    // Another prune, still beside the writer: still nothing deleted.
    let s = w.prune(0);
    assert_eq!((s.packs_condemned, s.packs_deleted), (0, 0), "{s:?}");

    // The early writer finishes: its snapshot names the condemned blobs.
    let first = w.repo.save_snapshot(&first_snapshot).unwrap();
    writer.check_held().unwrap();
    drop(writer);
    let s = w.prune(0);
    assert_eq!(s.markers_done, 1, "{s:?}");
    assert!(s.markers_waiting.is_empty(), "{s:?}");
    assert!(
        s.packs_reprieved > 0 && s.packs_deleted == 0,
        "the packs the finished writer needs stay: {s:?}"
    );
    assert_eq!(w.packs(), packs_before);
    assert!(w.repo.list_markers().unwrap().is_empty());
    w.assert_sound();
    w.assert_restores(&first, &src);
}

#[test]
fn condemned_packs_a_new_writer_stored_again_are_deleted_once_the_old_writers_are_gone() {
    let w = World::new();
    let src = w.env.path("src");
    write(&src.join("a.bin"), &pseudo_random(5, 2_000_000));
    let first = w.backup("a", &src).snapshot_id.unwrap();
    let writer = w.repo.lock(LockKind::Shared, "backup").unwrap();
    w.repo.delete_snapshot(&first).unwrap();
    let s = w.prune(0);
    assert!(s.packs_condemned > 0 && s.packs_deleted == 0, "{s:?}");
    // A writer that starts now reads the marker and stores the condemned blobs again
    // instead of reusing them.
    let again = w.backup("b", &src);
    assert!(
        again.bytes_added >= 2_000_000,
        "condemned blobs were reused: {} bytes added",
        again.bytes_added
    );
    let again = again.snapshot_id.unwrap();
    let packs = w.packs();
    // The grace period holds it back even once the writer is gone...
    drop(writer);
    let s = w.prune(3600);
    assert_eq!(s.packs_deleted, 0, "{s:?}");
    assert!(
        matches!(s.markers_waiting[..], [Readiness::Young { .. }]),
        "{s:?}"
    );
    // ... and after it (here: none) the old copies go; the new snapshot is whole.
    let s = w.prune(0);
    assert!(s.packs_deleted > 0 && w.packs() < packs, "{s:?}");
    assert_eq!(s.packs_reprieved, 0, "{s:?}");
    w.assert_sound();
    w.assert_restores(&again, &src);
}

#[test]
fn a_marker_left_incomplete_by_a_killed_prune_is_completed_and_carried_out() {
    let w = World::new();
    let src = w.env.path("src");
    write(&src.join("a.bin"), &pseudo_random(6, 1_500_000));
    let first = w.backup("a", &src).snapshot_id.unwrap();
    write(&src.join("a.bin"), &pseudo_random(7, 1_500_000));
    let second = w.backup("a", &src).snapshot_id.unwrap();
    w.repo.delete_snapshot(&first).unwrap();
    // A prune killed right after its first marker: no session list.
    let packs: Vec<_> = w
        .repo
        .list_packs()
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    w.repo
        .save_marker(&coffer::format::condemned::Condemned {
            time: 0,
            host: "killed".into(),
            sessions: None,
            packs,
        })
        .unwrap();
    let s = w.prune(0);
    // It condemned every pack, the live ones too: those are reprieved, the dead ones go.
    assert!(s.packs_deleted > 0 && s.packs_reprieved > 0, "{s:?}");
    assert!(w.repo.list_markers().unwrap().is_empty());
    w.assert_sound();
    w.assert_restores(&second, &src);
}
