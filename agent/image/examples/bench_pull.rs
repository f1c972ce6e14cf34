//! Pull + unpack benchmark: kapsel's image store against `skopeo copy docker://… oci:DIR` from
//! the same local registry (Debian's docker-registry on 127.0.0.1), for the busybox test image
//! and a larger multi-layer image; then the warm path (image present) of a second pod start.
//!
//! `cargo run --release -p kapsel-image --features testing --example bench_pull [RUNS]`
//! (root also runs a container to time a whole second container start.)

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kapsel_image::testing::{
    build_busybox, fill_busybox, require_tools, umoci_image, LayerFill, Registry, BUSYBOX_PATH,
    REGISTRY_TOOLS,
};
use kapsel_image::{Credentials, ImageRef, ImageStore, Progress, PullPolicy, StoreOptions};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A file of `n` incompressible bytes (xorshift), so layers keep their size when gzipped.
fn random_file(p: &Path, n: usize, seed: u64) -> std::io::Result<()> {
    let mut x = seed | 1;
    let mut buf = Vec::with_capacity(n);
    while buf.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(n);
    std::fs::write(p, buf)
}

/// Bytes of file content, each inode once (busybox's applets are hardlinks).
fn dir_size(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if seen.insert(m.ino()) => total += m.len(),
                Ok(_) => {}
                Err(_) => {}
            }
        }
    }
    total
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !require_tools(REGISTRY_TOOLS) {
        return Ok(());
    }
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let work = tempfile::Builder::new().prefix("kapsel-bench-").tempdir()?;
    let reg = Registry::start()?;
    println!("registry: docker-registry on {}", reg.host());

    let bb = build_busybox(&work.path().join("bb"), "1.36")?;
    reg.push_layout(&bb, "1.36", "bench/busybox:1.36", false)?;
    // the larger image: busybox + 6 layers of 10 MiB of incompressible data + one of 2000 small files
    let mut fills: Vec<LayerFill> = vec![Box::new(fill_busybox)];
    for i in 0..6u64 {
        fills.push(Box::new(move |root: &Path| {
            let d = root.join(format!("data{i}"));
            std::fs::create_dir_all(&d)?;
            random_file(&d.join("blob"), 10 << 20, 0x9e37_79b9_7f4a_7c15 ^ i)
        }));
    }
    fills.push(Box::new(|root: &Path| {
        let d = root.join("many");
        std::fs::create_dir_all(&d)?;
        for i in 0..2000 {
            std::fs::write(d.join(format!("f{i}")), format!("file {i}\n").repeat(64))?;
        }
        Ok(())
    }));
    let big = umoci_image(
        &work.path().join("big"),
        "1",
        fills,
        &["/bin/sh"],
        &[BUSYBOX_PATH],
    )?;
    reg.push_layout(&big, "1", "bench/big:1", false)?;
    let big_manifest = reg.raw_manifest("bench/big:1")?;
    let big_layers = big_manifest["layers"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    let big_bytes: u64 = big_manifest["layers"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["size"].as_u64()).sum())
        .unwrap_or(0);
    println!(
        "big image: {big_layers} layers, {:.1} MB compressed",
        big_bytes as f64 / 1e6
    );

    let rc = reg.registry_config();
    let creds = Credentials::anonymous();
    println!("\n| image | kapsel pull + unpack | kapsel, sync_snapshots | skopeo copy docker:// → oci: (no unpack) | unpacked size |");
    println!("|---|---|---|---|---|");
    let mut warm_store = None;
    for repo_tag in ["bench/busybox:1.36", "bench/big:1"] {
        let image = ImageRef::parse(&format!("{}/{repo_tag}", reg.host()))?;
        let mut kapsel = Vec::new();
        let mut skopeo = Vec::new();
        let mut synced = Vec::new();
        let mut size = 0;
        for r in 0..runs {
            let root = work
                .path()
                .join(format!("store-{}-{r}", repo_tag.replace(['/', ':'], "-")));
            let store = ImageStore::open(&root)?;
            let t = Instant::now();
            let info = store
                .ensure_image(&image, PullPolicy::Always, &creds, &rc, Progress::none())
                .await?;
            kapsel.push(t.elapsed());
            size = info.size;
            let sroot = work.path().join(format!("sync-{r}"));
            let opts = StoreOptions {
                sync_snapshots: true,
                ..StoreOptions::default()
            };
            let sstore = ImageStore::open_with(&sroot, opts)?;
            let t = Instant::now();
            sstore
                .ensure_image(&image, PullPolicy::Always, &creds, &rc, Progress::none())
                .await?;
            synced.push(t.elapsed());
            drop(sstore);
            std::fs::remove_dir_all(&sroot)?;
            let dest = work.path().join(format!("skopeo-{r}"));
            let t = Instant::now();
            let st = Command::new("skopeo")
                .args([
                    "--insecure-policy",
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                ])
                .arg(format!("docker://{}/{repo_tag}", reg.host()))
                .arg(format!("oci:{}:x", dest.display()))
                .status()?;
            skopeo.push(t.elapsed());
            if !st.success() {
                return Err("skopeo copy failed".into());
            }
            std::fs::remove_dir_all(&dest)?;
            if repo_tag == "bench/busybox:1.36" && r == 0 {
                warm_store = Some(store);
            } else {
                drop(store);
                std::fs::remove_dir_all(&root)?;
            }
        }
        println!(
            "| {repo_tag} | {} | {} | {} | {:.1} MB |",
            ms(median(kapsel)),
            ms(median(synced)),
            ms(median(skopeo)),
            size as f64 / 1e6
        );
    }

    // second pod start, image present: what the agent does before creating the container
    let store = warm_store.ok_or("no warm store")?;
    let image = ImageRef::parse(&format!("{}/bench/busybox:1.36", reg.host()))?;
    let mut warm = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let info = store
            .ensure_image(
                &image,
                PullPolicy::IfNotPresent,
                &creds,
                &rc,
                Progress::none(),
            )
            .await?;
        warm.push(t.elapsed());
        assert!(info.pulled.is_none());
    }
    println!(
        "\nsecond pod start, image present (ensure_image IfNotPresent, median of 50): {}",
        ms(median(warm))
    );
    println!(
        "store on disk after busybox pull: {:.1} MB",
        dir_size(store.root()) as f64 / 1e6
    );
    Ok(())
}
