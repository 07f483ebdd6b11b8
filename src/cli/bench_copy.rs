//! `berth bench-copy`: copy throughput of the one graph-copy engine between two
//! registries. Seeds the source with N plugin-like images (config + one layer), each
//! with R referrers (one small layer each), then times `extended_copy` of every image to
//! the destination and prints objects/s and MiB/s. Nothing is timed while seeding.

use super::transfer::RemoteArgs;
use crate::content::copy::{CopyOptions, CopyReport, extended_copy};
use crate::content::remote::RemoteRegistry;
use crate::content::{Pusher, Reader, TagResolver, descriptor_for};
use crate::oci::media;
use anyhow::{Context, Result};
use clap::Args;
use futures_util::StreamExt;
use oci_spec::image::Descriptor;
use serde_json::json;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchCopyArgs {
    /// Source registry (host:port).
    pub src: String,
    /// Destination registry (host:port).
    pub dst: String,
    /// Images to copy.
    #[arg(long, default_value_t = 200)]
    pub images: usize,
    /// Referrers per image.
    #[arg(long, default_value_t = 4)]
    pub referrers: usize,
    /// Size of each image's layer, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub layer_size: usize,
    /// Images copied at once (each copy also runs its own storage operations concurrently).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Repository prefix: images go to `<repo>/src` and are copied to `<repo>/dst`.
    #[arg(long, default_value = "bench/copy")]
    pub repo: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

fn reader(b: Vec<u8>) -> Reader {
    Box::pin(std::io::Cursor::new(b))
}

/// Deterministic, distinct bytes per (seed, index).
fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn push(t: &dyn Pusher, media_type: &str, bytes: Vec<u8>) -> Result<Descriptor> {
    let d = descriptor_for(media_type, &bytes);
    t.push(&d, reader(bytes)).await?;
    Ok(d)
}

pub async fn run(a: BenchCopyArgs) -> Result<i32> {
    let opts = a.remote.options();
    let src = RemoteRegistry::new(&a.src, opts.clone())?.repository(&format!("{}/src", a.repo))?;
    let dst = RemoteRegistry::new(&a.dst, opts)?.repository(&format!("{}/dst", a.repo))?;
    let run_id: u64 = rand::random();
    let started = Instant::now();
    let empty = push(&src, media::OCI_EMPTY, b"{}".to_vec()).await?;
    let seeds = futures_util::stream::iter(0..a.images)
        .map(|i| {
            let (src, empty) = (&src, &empty);
            let a = &a;
            async move {
                let seed = run_id ^ (i as u64) << 20;
                let layer = push(src, "application/vnd.oci.image.layer.v1.tar", fill(seed, a.layer_size)).await?;
                let m = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": empty.digest(), "size": 2},
                    "layers": [layer], "annotations": {"bench.run": run_id.to_string(), "bench.image": i.to_string()}});
                let img = push(src, media::OCI_MANIFEST, serde_json::to_vec(&m)?).await?;
                for r in 0..a.referrers {
                    let payload = push(src, "application/octet-stream", fill(seed + 1 + r as u64, 1024)).await?;
                    let rm = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
                        "artifactType": format!("application/vnd.bench.kind{r}"), "config": empty, "layers": [payload], "subject": img});
                    push(src, media::OCI_MANIFEST, serde_json::to_vec(&rm)?).await?;
                }
                anyhow::Ok(img)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let roots: Vec<Descriptor> = seeds.into_iter().collect::<Result<_>>().context("seeding the source")?;
    let seeding = started.elapsed();
    src.tag(&roots[0], "bench-first").await?;

    let copy_opts = CopyOptions::default();
    let t0 = Instant::now();
    let reports = futures_util::stream::iter(roots.iter())
        .map(|root| extended_copy(&src, &dst, root, &copy_opts))
        .buffer_unordered(a.parallel.max(1))
        .collect::<Vec<_>>()
        .await;
    let secs = t0.elapsed().as_secs_f64();
    let mut total = CopyReport::default();
    for r in reports {
        total.merge(&r?);
    }
    let objects_per_s = total.copied as f64 / secs;
    let mib_per_s = total.bytes_copied as f64 / secs / (1024.0 * 1024.0);
    if a.json {
        println!(
            "{}",
            json!({"images": a.images, "referrers_per_image": a.referrers, "seconds": secs, "seeding_seconds": seeding.as_secs_f64(),
                   "objects_per_second": objects_per_s, "mib_per_second": mib_per_s, "report": total})
        );
    } else {
        println!(
            "copied {} images with {} referrers each, {} → {}: {} objects ({} blobs, {} manifests), {:.1} MiB in {:.2} s",
            a.images,
            a.referrers,
            a.src,
            a.dst,
            total.copied,
            total.blobs_copied,
            total.manifests_copied,
            total.bytes_copied as f64 / (1024.0 * 1024.0),
            secs
        );
        println!(
            "{objects_per_s:.0} objects/s, {mib_per_s:.1} MiB/s (seeding took {:.2} s, not counted)",
            seeding.as_secs_f64()
        );
    }
    Ok(0)
}
