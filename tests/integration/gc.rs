//! `berth gc`: unreferenced blobs and orphaned referrers go, everything reachable stays,
//! and nothing younger than the grace period is touched.

use crate::common::*;
use berth::content::check::check;
use berth::content::gc::{GcOptions, gc};
use std::time::Duration;

async fn run_gc(s: &TestServer, grace: Duration, dry_run: bool) -> berth::content::gc::GcReport {
    let store = s.registry.store.clone();
    tokio::task::spawn_blocking(move || gc(&store, &GcOptions { grace, dry_run })).await.unwrap().unwrap()
}

async fn assert_clean(s: &TestServer) {
    let store = s.registry.store.clone();
    let r = tokio::task::spawn_blocking(move || check(&store)).await.unwrap().unwrap();
    assert!(r.is_clean(), "{:?}", r.problems);
}

#[tokio::test]
async fn gc_sweeps_unreferenced_blobs_and_orphaned_referrers() {
    let s = TestServer::start().await;
    let c = client();
    let u = &s.url;
    let (a, a_size) = push_image(&c, u, "acme/p", "a", b"layer-a").await;
    let r = push_referrer(&c, u, "acme/p", "application/vnd.x", (&a, a_size), b"ref").await;
    let r_size = c.get(format!("{u}/v2/acme/p/manifests/{r}")).send().await.unwrap().bytes().await.unwrap().len();
    let sig = push_referrer(&c, u, "acme/p", "application/vnd.sig", (&r, r_size), b"sig-on-ref").await;
    let (b, _) = push_image(&c, u, "acme/p", "b", b"layer-b").await;
    let stray = push_blob(&c, u, "acme/p", b"never referenced").await;
    assert_eq!(c.delete(format!("{u}/v2/acme/p/manifests/{b}")).send().await.unwrap().status(), 202);

    // within the grace period nothing goes
    let rep = run_gc(&s, Duration::from_secs(3600), false).await;
    assert!(rep.blobs_deleted.is_empty() && rep.orphaned_referrers.is_empty(), "{rep:?}");

    // dry run reports, deletes nothing
    let rep = run_gc(&s, Duration::ZERO, true).await;
    let mut deleted: Vec<String> = rep.blobs_deleted.iter().map(|d| d.to_string()).collect();
    deleted.sort();
    let mut want = vec![b.clone(), sha256(b"layer-b"), stray.clone()];
    want.sort();
    assert_eq!(deleted, want);
    assert!(c.head(format!("{u}/v2/acme/p/blobs/{stray}")).send().await.unwrap().status().is_success());

    // the real thing
    let rep = run_gc(&s, Duration::ZERO, false).await;
    assert_eq!(rep.blobs_deleted.len(), 3, "{rep:?}");
    assert_eq!(c.head(format!("{u}/v2/acme/p/blobs/{stray}")).send().await.unwrap().status(), 404);
    for m in [&a, &r, &sig] {
        assert_eq!(c.get(format!("{u}/v2/acme/p/manifests/{m}")).send().await.unwrap().status(), 200);
    }
    assert_eq!(c.get(format!("{u}/v2/acme/p/blobs/{}", sha256(b"layer-a"))).send().await.unwrap().status(), 200);
    assert_clean(&s).await;

    // once the subject goes, its referrers go with it, recursively
    assert_eq!(c.delete(format!("{u}/v2/acme/p/manifests/{a}")).send().await.unwrap().status(), 202);
    let rep = run_gc(&s, Duration::ZERO, false).await;
    let mut orphans = rep.orphaned_referrers.clone();
    orphans.sort();
    let mut want = vec![format!("acme/p@{r}"), format!("acme/p@{sig}")];
    want.sort();
    assert_eq!(orphans, want);
    assert_eq!(c.get(format!("{u}/v2/acme/p/manifests/{sig}")).send().await.unwrap().status(), 404);
    assert_clean(&s).await;
    // all that is left is nothing
    let rep = run_gc(&s, Duration::ZERO, false).await;
    assert!(rep.blobs_deleted.is_empty());
    let left = std::fs::read_dir(s.data_dir().join("blobs/sha256"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .count();
    assert_eq!(left, 0);
}

#[test]
fn gc_and_fsck_commands_run_on_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_berth");
    let out = std::process::Command::new(bin)
        .args(["gc", "--dry-run", "--grace", "0s", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("would delete 0 blobs"));
    // a corrupt blob is caught by fsck
    let d = berth::oci::Digest::sha256(b"good");
    let p = dir.path().join("blobs/sha256").join(&d.hex()[..2]);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(d.hex()), b"evil").unwrap();
    let out = std::process::Command::new(bin).args(["fsck", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is corrupt"));
}
