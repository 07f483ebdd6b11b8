//! The publisher's commands: `validate`, `pack`, `sbom`, `key generate`, `sign`,
//! `verify-signature` and `publish`.

use super::transfer::RemoteArgs;
use crate::artifacts::{self, Publication};
use crate::content::endpoint::Endpoint;
use crate::pack::{self, PackSpec};
use crate::sign::{self, KeyPair};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// Passwords for encrypted keys come from `COSIGN_PASSWORD`, as with cosign.
const PASSWORD_ENV: &str = "COSIGN_PASSWORD";

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// A plugin manifest file (JSON), or an image (host/name:tag|@digest, oci-layout:DIR:tag)
    /// whose plugin manifest artifacts are found among its referrers and validated.
    pub manifest: String,
    /// The repository the plugin is (to be) published in, e.g. `acme/tool` (default for an
    /// image: its repository).
    #[arg(long)]
    pub repository: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// The plugin's static binary.
    #[arg(long)]
    pub binary: PathBuf,
    /// Extra file, as SRC:PATH_IN_IMAGE (repeatable).
    #[arg(long = "file", value_name = "SRC:PATH")]
    pub files: Vec<String>,
    /// Port the plugin listens on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Image annotation KEY=VALUE (repeatable), e.g. org.opencontainers.image.version=1.0.0.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Where to write the image: oci-layout:DIR:tag or host/name:tag.
    #[arg(long, short)]
    pub output: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Subcommand, Debug)]
pub enum SbomCommand {
    /// CycloneDX 1.5 JSON for a Rust plugin from its Cargo.lock.
    Generate {
        #[arg(long, default_value = "Cargo.lock")]
        cargo_lock: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Validate a CycloneDX 1.4–1.6 JSON SBOM.
    Validate { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Generate an ECDSA P-256 key pair: PREFIX.key (cosign's encrypted format, password
    /// from COSIGN_PASSWORD) and PREFIX.pub (PEM).
    Generate {
        #[arg(long, default_value = "cosign")]
        output_prefix: String,
    },
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// What to sign: host/name@sha256:… (or a tag, resolved first) or oci-layout:DIR[:tag].
    pub reference: String,
    /// Private key (cosign format; password from COSIGN_PASSWORD).
    #[arg(long)]
    pub key: PathBuf,
    /// Write cosign's legacy `.sig` tag format instead of a sigstore bundle referrer.
    #[arg(long)]
    pub legacy: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct VerifySignatureArgs {
    /// What to verify: host/name@sha256:… or tag, or oci-layout:DIR[:tag].
    pub reference: String,
    /// Trusted public key (PEM); repeatable.
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Plugin directory holding plugin.json (and optionally sbom.cdx.json, Cargo.lock).
    pub dir: PathBuf,
    /// Registry to publish to (host[:port]); the repository is <publisher>/<name>.
    #[arg(long)]
    pub registry: String,
    /// The image: oci-layout:DIR:tag or host/name:tag|@digest. Default: pack --binary.
    #[arg(long)]
    pub image: Option<String>,
    /// Static binary to pack into the image when --image is not given.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// SBOM file (default: DIR/sbom.cdx.json, else generated from --cargo-lock).
    #[arg(long)]
    pub sbom: Option<PathBuf>,
    /// Cargo.lock to generate the SBOM from (default: DIR/Cargo.lock).
    #[arg(long)]
    pub cargo_lock: Option<PathBuf>,
    /// Publisher's private key (password from COSIGN_PASSWORD).
    #[arg(long)]
    pub key: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

fn password() -> Vec<u8> {
    std::env::var(PASSWORD_ENV).unwrap_or_default().into_bytes()
}

fn load_key(path: &Path) -> Result<KeyPair> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    sign::load_private_key(&pem, &password())
        .with_context(|| format!("loading {} (password from {PASSWORD_ENV})", path.display()))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn report(what: &str, v: &serde_json::Value, repository: Option<&str>) -> bool {
    match crate::plugin::validate(v, repository) {
        Ok(m) => {
            println!("{what}: valid plugin manifest for {}/{} {}", m.publisher, m.name, m.version);
            true
        }
        Err(e) => {
            println!("{what}: {} problem(s)\n{e}", e.problems.len());
            false
        }
    }
}

pub async fn validate(a: ValidateArgs) -> Result<i32> {
    let path = Path::new(&a.manifest);
    if path.exists() {
        let ok = report(&a.manifest, &read_json(path)?, a.repository.as_deref());
        return Ok(if ok { 0 } else { 1 });
    }
    // An image: validate every plugin manifest artifact attached to it.
    let e = Endpoint::parse(&a.manifest)?;
    let (opened, image, _) = resolve(&e, &a.remote).await?;
    let repository = a.repository.clone().or(match &e {
        Endpoint::Registry(r) => Some(r.repository.clone()),
        Endpoint::Layout { .. } => None,
    });
    let t = opened.target();
    let found: Vec<_> = t
        .predecessors(&image)
        .await?
        .into_iter()
        .filter(|d| {
            d.artifact_type().as_ref().is_some_and(|a| a.to_string() == crate::plugin::PLUGIN_MANIFEST_MEDIA_TYPE)
        })
        .collect();
    if found.is_empty() {
        eprintln!(
            "{e}: no plugin manifest artifact ({}) refers to {}",
            crate::plugin::PLUGIN_MANIFEST_MEDIA_TYPE,
            image.digest()
        );
        return Ok(1);
    }
    let mut all_ok = true;
    for d in found {
        let bytes = crate::content::fetch_all(t, &d).await?;
        let m: serde_json::Value = serde_json::from_slice(&bytes)?;
        let layer: oci_spec::image::Descriptor = serde_json::from_value(m["layers"][0].clone())
            .with_context(|| format!("artifact {} has no layer", d.digest()))?;
        let doc = crate::content::fetch_all(t, &layer).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&doc).with_context(|| format!("artifact {} does not hold JSON", d.digest()))?;
        all_ok &= report(&format!("{e} → artifact {}", d.digest()), &v, repository.as_deref());
        // The manifest must describe this very image.
        let pinned = v.pointer("/runtime/image").and_then(|i| i.as_str()).unwrap_or_default();
        if !pinned.ends_with(&format!("@{}", image.digest())) {
            println!("  /runtime/image: {pinned:?} does not name the image it is attached to ({})", image.digest());
            all_ok = false;
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}

fn pack_spec(binary: &Path, files: &[String], port: u16, annotations: &[String]) -> Result<PackSpec> {
    let mut spec = PackSpec::new(binary);
    spec.port = port;
    for f in files {
        let (src, dst) = f.split_once(':').with_context(|| format!("--file {f:?}: write SRC:PATH_IN_IMAGE"))?;
        spec.files.push((PathBuf::from(src), dst.to_string()));
    }
    for a in annotations {
        let (k, v) = a.split_once('=').with_context(|| format!("--annotation {a:?}: write KEY=VALUE"))?;
        spec.annotations.insert(k.to_string(), v.to_string());
    }
    Ok(spec)
}

pub async fn pack(a: PackArgs) -> Result<i32> {
    let spec = pack_spec(&a.binary, &a.files, a.port, &a.annotations)?;
    let dst = Endpoint::parse(&a.output)?;
    let opened = dst.open(&a.remote.options()).with_context(|| format!("opening {dst}"))?;
    let desc = pack::pack(&spec, opened.target(), dst.tag()).await?;
    println!("{dst} is {}", desc.digest());
    Ok(0)
}

pub fn sbom(c: SbomCommand) -> Result<i32> {
    match c {
        SbomCommand::Generate { cargo_lock, name, version, output } => {
            let lock =
                std::fs::read_to_string(&cargo_lock).with_context(|| format!("reading {}", cargo_lock.display()))?;
            let bom = crate::sbom::from_cargo_lock(&lock, &name, &version)?;
            let text = serde_json::to_string_pretty(&bom)?;
            match output {
                Some(p) => std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(0)
        }
        SbomCommand::Validate { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            match crate::sbom::validate(&bytes) {
                Ok(s) => {
                    println!("{}: valid CycloneDX {} with {} components", file.display(), s.spec_version, s.components);
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    Ok(1)
                }
            }
        }
    }
}

pub fn key(c: KeyCommand) -> Result<i32> {
    match c {
        KeyCommand::Generate { output_prefix } => {
            let (priv_path, pub_path) = (format!("{output_prefix}.key"), format!("{output_prefix}.pub"));
            for p in [&priv_path, &pub_path] {
                if Path::new(p).exists() {
                    bail!("{p} exists; refusing to overwrite a key");
                }
            }
            let k = sign::generate_key(&password())?;
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&priv_path)?;
                f.write_all(k.encrypted_private_pem().as_bytes())?;
            }
            std::fs::write(&pub_path, k.public_key().to_pem()?)?;
            println!("wrote {priv_path} and {pub_path} (key id {})", k.key_id());
            Ok(0)
        }
    }
}

async fn resolve(
    e: &Endpoint,
    remote: &RemoteArgs,
) -> Result<(crate::content::endpoint::Opened, oci_spec::image::Descriptor, String)> {
    let reference = e.reference().with_context(|| format!("{e} names no tag or digest"))?;
    let opened = e.open(&remote.options()).with_context(|| format!("opening {e}"))?;
    let desc = opened.target().resolve(&reference).await.with_context(|| format!("resolving {e}"))?;
    let repo = match e {
        Endpoint::Registry(r) => r.repository.clone(),
        Endpoint::Layout { dir, .. } => dir.display().to_string(),
    };
    Ok((opened, desc, repo))
}

pub async fn sign_cmd(a: SignArgs) -> Result<i32> {
    let key = load_key(&a.key)?;
    let e = Endpoint::parse(&a.reference)?;
    let (opened, subject, repo) = resolve(&e, &a.remote).await?;
    let sig = if a.legacy {
        let docker_ref = match &e {
            Endpoint::Registry(r) => format!("{}/{}", r.registry, r.repository),
            Endpoint::Layout { .. } => repo.clone(),
        };
        sign::sign_legacy(opened.target(), &subject, &docker_ref, &key).await?
    } else {
        sign::sign_and_attach(opened.target(), &subject, &repo, &key).await?
    };
    println!("signed {} with key {}: signature {}", subject.digest(), key.key_id(), sig.digest());
    Ok(0)
}

pub async fn verify_signature(a: VerifySignatureArgs) -> Result<i32> {
    let keys = super::load_public_keys(&a.keys)?;
    let e = Endpoint::parse(&a.reference)?;
    let (opened, subject, _) = resolve(&e, &a.remote).await?;
    match sign::verify_subject(opened.target(), &subject, &keys).await {
        Ok(sigs) => {
            for s in &sigs {
                println!(
                    "verified {} : {:?} signature by key {} ({})",
                    subject.digest(),
                    s.format,
                    s.key_id,
                    s.manifest
                );
            }
            Ok(0)
        }
        Err(err) => {
            eprintln!("verification failed: {err}");
            Ok(1)
        }
    }
}

pub async fn publish(a: PublishArgs) -> Result<i32> {
    let manifest = read_json(&a.dir.join("plugin.json"))?;
    let key = load_key(&a.key)?;
    let name = manifest.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let version = manifest.get("version").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let publisher = manifest.get("publisher").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    // The image: given, or packed now from the binary into memory.
    let memory = crate::content::MemoryStore::new();
    let (source_opened, image) = match (&a.image, &a.binary) {
        (Some(img), _) => {
            let e = Endpoint::parse(img)?;
            let (o, d, _) = resolve(&e, &a.remote).await?;
            (Some(o), d)
        }
        (None, Some(bin)) => (None, pack::pack(&PackSpec::for_plugin(bin, &manifest)?, &memory, None).await?),
        (None, None) => bail!("give --image or --binary"),
    };
    let sbom = artifacts::plugin_sbom(&a.dir, a.sbom.as_deref(), a.cargo_lock.as_deref(), &name, &version)?;
    let dst_ref = crate::oci::ImageReference::parse(&format!("{}/{publisher}/{name}", a.registry))
        .with_context(|| format!("registry {:?} with repository {publisher}/{name}", a.registry))?;
    let dst = crate::content::remote::open(&dst_ref, a.remote.options())?;
    let source: &dyn crate::content::GraphTarget = match &source_opened {
        Some(o) => o.target(),
        None => &memory,
    };
    let published = artifacts::publish(
        &dst,
        Publication { manifest, image_source: source, image, sbom, registry: a.registry.clone(), key: &key },
    )
    .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&published)?);
    } else {
        println!("published {}", published.reference);
        println!("  plugin manifest  {}", published.manifest_artifact);
        println!("  SBOM             {}", published.sbom);
        println!("  image signature  {}", published.image_signature);
        println!("  manifest sig.    {}", published.manifest_signature);
        let c = &published.copy;
        if c.copied == 0 {
            println!("  image already present: nothing transferred");
        } else {
            println!("  image: {} objects, {} bytes transferred", c.copied, c.bytes_copied);
        }
    }
    Ok(0)
}
