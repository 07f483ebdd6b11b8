//! Starting the registry from a [`Config`]: open the store, load or create the token
//! key, start webhook delivery, bind, serve until shut down.

use super::auth::{Auth, AuthSettings};
use super::events::Events;
use super::{Registry, router};
use crate::config::{Config, ConfigError};
use crate::content::{ContentError, FsStore};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the store: {0}")]
    Store(#[from] ContentError),
    #[error("token key {path}: {source}")]
    Key { path: String, source: std::io::Error },
    #[error("listening on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Verification(#[from] crate::verify::worker::WorkerError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::service::CatalogError),
    /// The message names the key file.
    #[error("catalog.root_key_file: {0}")]
    RootKey(String),
    #[error(transparent)]
    Directory(#[from] crate::catalog::directory::DirectoryError),
}

/// Reads the token signing key, creating a random one (mode 0600) on first start.
fn token_key(path: &Path) -> Result<Vec<u8>, ServeError> {
    let err = |source| ServeError::Key { path: path.display().to_string(), source };
    match std::fs::read(path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) => return Err(err(std::io::Error::other("key is shorter than 32 bytes"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let key: [u8; 32] = rand::random();
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
        f.write_all(&key).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(key.to_vec())
}

/// Builds the registry `config` describes (validating it first).
pub fn open(config: &Config) -> Result<Arc<Registry>, ServeError> {
    config.validate()?;
    let store = FsStore::open(&config.server.data_dir)?;
    let key_path = config.auth.token_key_file.clone().unwrap_or_else(|| config.server.data_dir.join("token.key"));
    let key = token_key(&key_path)?;
    let auth = Auth::new(
        AuthSettings {
            accounts: config.auth.accounts.clone(),
            anonymous_pull: config.auth.anonymous_pull,
            protected_mode: config.server.protected_mode,
            token_ttl: Duration::from_secs(config.auth.token_ttl_seconds),
            realm: config.server.public_url.as_ref().map(|u| format!("{}/token", u.trim_end_matches('/'))),
            service: "berth".to_string(),
        },
        key,
    );
    let events = Events::new(config.server.listen.clone());
    let internal = Arc::new(super::auth::InternalAccount::new());
    auth.add_credential_source(internal.clone());
    let (username, password) = internal.credentials();
    let internal = crate::content::remote::Credentials { username, password };
    Ok(Arc::new(Registry { store, auth, events, internal }))
}

/// Serves `registry` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_app(listener, router(registry), shutdown).await
}

/// Serves `app` (the registry's router, possibly with more routes merged) on `listener`.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(ServeError::Serve)
}

/// Opens, binds and serves per `config` until SIGINT or SIGTERM. Prints the bound address.
pub async fn run(config: &Config) -> Result<(), ServeError> {
    let registry = open(config)?;
    registry.events.spawn_webhooks(&config.notifications.endpoints);
    let addr = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
    let local = listener.local_addr().map_err(ServeError::Serve)?;
    // Tests and scripts read this line to learn the port when listening on :0.
    println!("berth registry listening on http://{local} (data in {})", config.server.data_dir.display());
    let mut app = router(Arc::clone(&registry));
    let mut tasks = Vec::new();
    let mut verifier_key = None;
    let mut sources = crate::metrics::Sources::default();
    // The catalog root key signs publisher records and lifecycle status; the verifier and the
    // catalog trust records it signed.
    let root = if config.catalog.enabled {
        let path =
            config.catalog.root_key_file.clone().unwrap_or_else(|| config.server.data_dir.join("catalog-root.key"));
        let password = std::env::var("BERTH_CATALOG_ROOT_PASSWORD").unwrap_or_default();
        Some(Arc::new(crate::sign::load_or_create_key(&path, password.as_bytes()).map_err(ServeError::RootKey)?))
    } else {
        None
    };
    if config.verification.enabled {
        let v = crate::verify::worker::Verification::open(config, Arc::clone(&registry), local)?;
        verifier_key = Some(v.public_key());
        if let Some(root) = &root {
            let mut roots = vec![root.public_key().clone()];
            for p in &config.catalog.root_keys {
                let pem =
                    std::fs::read_to_string(p).map_err(|e| ServeError::RootKey(format!("{}: {e}", p.display())))?;
                roots.push(
                    crate::sign::load_public_key(&pem)
                        .map_err(|e| ServeError::RootKey(format!("{}: {e}", p.display())))?,
                );
            }
            v.trust_publisher_records(roots);
        }
        sources.queue = Some(Arc::clone(&v.queue));
        tasks = v.spawn();
        app = app.merge(v.routes());
    }
    if let Some(root) = root {
        let catalog = crate::catalog::service::open(config, &registry, local, verifier_key, root.public_key().clone())?;
        let db = config.catalog.database.clone().unwrap_or_else(|| config.server.data_dir.join("catalog.sqlite"));
        let directory = Arc::new(crate::catalog::directory::Directory::open(&db)?);
        catalog.set_directory(Arc::clone(&directory));
        // Publisher push tokens are registry credentials for their namespace.
        registry.auth.add_credential_source(directory.clone());
        let governance = crate::catalog::governance::Governance::new(
            config,
            directory,
            Arc::clone(&registry),
            Arc::clone(&catalog),
            root,
        );
        app = app.merge(governance.routes());
        sources.index = Some(Arc::clone(&catalog.index));
        let rebuild = catalog.index.needs_rebuild();
        if !rebuild {
            // The index is current; the publisher records it was built with are read again
            // before any event is handled (a refresh must not see an empty approved set).
            let source = crate::catalog::harvest::Source::Embedded(Arc::clone(&registry.store));
            if let Err(e) = catalog.load_publishers(&source).await {
                tracing::error!("catalog publisher records: {e}");
            }
        }
        tasks.extend(catalog.spawn(&registry));
        if rebuild {
            let (c, store) = (Arc::clone(&catalog), Arc::clone(&registry.store));
            // On a blocking thread driving the future itself: the walk's futures are not
            // `'static` enough for `tokio::spawn`, and a rebuild is a batch job anyway.
            let handle = tokio::runtime::Handle::current();
            tasks.push(tokio::task::spawn_blocking(move || {
                match handle.block_on(c.rebuild(&crate::catalog::harvest::Source::Embedded(store))) {
                    Ok(r) => tracing::info!(versions = r.versions, seconds = r.seconds, "catalog index built"),
                    Err(e) => tracing::error!("catalog index build: {e}"),
                }
            }));
        }
        app = app.merge(catalog.routes());
        // Mode A: the first-party plugins, published in the background if missing.
        tasks.extend(crate::catalog::seed::spawn(config, &registry, local));
    }
    // Last, so that every route is measured; `/metrics` included.
    let app = crate::metrics::Metrics::new(Arc::clone(&registry), sources).instrument(app);
    let result = serve_app(listener, app, shutdown_signal()).await;
    for t in tasks {
        t.abort();
    }
    result
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
