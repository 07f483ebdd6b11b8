//! Sockets made inside another process's network namespace, without any host network setup.
//!
//! Each plugin runs with its own network namespace holding only loopback. Rather than wiring
//! veth pairs, bridges or firewall rules, the runner (root, in the host namespace) keeps one
//! thread per plugin that has entered the plugin's namespace with `setns(2)` and makes
//! sockets there on request. A socket belongs to the namespace it was created in for its
//! whole life, whichever thread later uses it, so a listener bound there can be accepted from
//! the runner's tokio runtime and a stream connected there can be read and written anywhere
//! (see `network_namespaces(7)` and `setns(2)`). This module owns that thread ([`Netns`]) and
//! a host-to-namespace TCP forwarder ([`forward`]); it does not decide what may be reached —
//! the egress proxy ([`super::egress`]) and the policy do.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

/// How long a connect inside the namespace may take. Loopback answers at once; this only
/// bounds a listener whose accept queue is full.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`forward`] waits after a failed accept (e.g. out of file descriptors) so that a
/// persistent error does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What can go wrong making sockets in a network namespace; every variant names the namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot start a thread for network namespace {}: {source}", path.display())]
    Thread { path: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Enter { path: PathBuf, source: io::Error },
    #[error("cannot bind {addr} in network namespace {}: {source}", path.display())]
    Bind { path: PathBuf, addr: SocketAddr, source: io::Error },
    #[error("cannot connect to {addr} in network namespace {}: {source}", path.display())]
    Connect { path: PathBuf, addr: SocketAddr, source: io::Error },
    #[error("the thread serving network namespace {} has stopped", path.display())]
    Stopped { path: PathBuf },
}

type Reply<T> = Box<dyn FnOnce(io::Result<T>) + Send>;

/// A request to the namespace thread; the reply is a closure so that blocking and async
/// callers can each wait their own way.
enum Request {
    Bind(SocketAddr, Reply<TcpListener>),
    Connect(SocketAddr, Reply<TcpStream>),
}

/// A thread that lives in another process's network namespace and makes sockets there.
///
/// Dropping it closes the request channel: the thread ends as soon as it has answered any
/// request in flight. Dropping never blocks, so it is safe in async code.
pub struct Netns {
    path: PathBuf,
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netns").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Netns {
    /// Enters the network namespace of `pid` (`/proc/<pid>/ns/net`) on a new thread.
    pub fn of_pid(pid: u32) -> Result<Netns, NetnsError> {
        Netns::open(&PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    /// Enters the network namespace at `path` (e.g. `/proc/<pid>/task/<tid>/ns/net` or
    /// `/run/netns/<name>`) on a new thread.
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        let path = path.to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
        let (started_tx, started_rx) = mpsc::sync_channel(1);
        let (requests, requests_rx) = mpsc::channel();
        thread::Builder::new()
            .name("berth-netns".to_string())
            .spawn(move || serve(file, started_tx, requests_rx))
            .map_err(|source| NetnsError::Thread { path: path.clone(), source })?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Netns { path, requests }),
            Ok(Err(source)) => Err(NetnsError::Enter { path, source }),
            Err(mpsc::RecvError) => Err(NetnsError::Stopped { path }),
        }
    }

    /// The namespace file this thread entered.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A TCP listener bound to `addr` inside the namespace, nonblocking, ready for
    /// `tokio::net::TcpListener::from_std`.
    pub fn bind(&self, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Request::Bind(addr, reply_to(tx)))?;
        let result = rx.recv().map_err(|_| self.stopped())?;
        result.map_err(|source| NetnsError::Bind { path: self.path.clone(), addr, source })
    }

    /// A TCP stream connected to `addr` inside the namespace, nonblocking, ready for
    /// `tokio::net::TcpStream::from_std`. Blocks the calling thread for the connect (at most
    /// two seconds); async callers use [`Netns::connect_tokio`].
    pub fn connect(&self, addr: SocketAddr) -> Result<TcpStream, NetnsError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Request::Connect(addr, reply_to(tx)))?;
        let result = rx.recv().map_err(|_| self.stopped())?;
        result.map_err(|source| self.connect_error(addr, source))
    }

    /// [`Netns::connect`] without blocking the runtime, registered with tokio.
    pub async fn connect_tokio(&self, addr: SocketAddr) -> Result<tokio::net::TcpStream, NetnsError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Request::Connect(
            addr,
            Box::new(move |result| {
                // The caller may have given up waiting; the stream is then simply closed.
                let _ = tx.send(result);
            }),
        ))?;
        let stream = rx.await.map_err(|_| self.stopped())?.map_err(|source| self.connect_error(addr, source))?;
        tokio::net::TcpStream::from_std(stream).map_err(|source| self.connect_error(addr, source))
    }

    fn send(&self, request: Request) -> Result<(), NetnsError> {
        self.requests.send(request).map_err(|_| self.stopped())
    }

    fn stopped(&self) -> NetnsError {
        NetnsError::Stopped { path: self.path.clone() }
    }

    fn connect_error(&self, addr: SocketAddr, source: io::Error) -> NetnsError {
        NetnsError::Connect { path: self.path.clone(), addr, source }
    }
}

fn reply_to<T: Send + 'static>(tx: mpsc::SyncSender<io::Result<T>>) -> Reply<T> {
    Box::new(move |result| {
        // A closed receiver means the caller is gone; nothing to tell it.
        let _ = tx.send(result);
    })
}

/// The namespace thread: enter, report, then make sockets until every sender is dropped.
fn serve(file: File, started: mpsc::SyncSender<io::Result<()>>, requests: mpsc::Receiver<Request>) {
    // SAFETY: `file` is an open namespace file; setns(2) with CLONE_NEWNET changes the
    // network namespace of this thread only, and this thread runs nothing but the loop below.
    let entered = if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    drop(file);
    let failed = entered.is_err();
    if started.send(entered).is_err() || failed {
        return;
    }
    for request in requests {
        match request {
            Request::Bind(addr, reply) => reply(bind_here(addr)),
            Request::Connect(addr, reply) => reply(connect_here(addr)),
        }
    }
}

fn bind_here(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn connect_here(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Forwards every connection accepted on `host_listener` (a host-namespace loopback
/// listener) to `target` inside `netns`, copying both ways, until the returned task is
/// aborted. Aborting it also ends the connections it is relaying.
pub fn forward(netns: Arc<Netns>, host_listener: tokio::net::TcpListener, target: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Owned here so that aborting this task drops (and so aborts) every relay.
        let mut relays = JoinSet::new();
        loop {
            tokio::select! {
                accepted = host_listener.accept() => match accepted {
                    Ok((inbound, peer)) => {
                        relays.spawn(relay(netns.clone(), inbound, peer, target));
                    }
                    Err(error) => {
                        tracing::warn!(%error, namespace = %netns.path.display(), %target, "forward: accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                Some(_) = relays.join_next(), if !relays.is_empty() => {}
            }
        }
    })
}

async fn relay(netns: Arc<Netns>, mut inbound: tokio::net::TcpStream, peer: SocketAddr, target: SocketAddr) {
    let mut outbound = match netns.connect_tokio(target).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%error, %peer, "forward: cannot reach the target");
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
        Ok((up, down)) => tracing::trace!(%peer, %target, up, down, "forward: connection closed"),
        Err(error) => tracing::debug!(%error, %peer, %target, "forward: connection ended with an error"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;
    use std::os::fd::{FromRawFd, OwnedFd};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fresh network namespace held by a parked helper thread; dropping it releases the thread.
    pub(crate) struct FreshNamespace {
        pub(crate) path: PathBuf,
        _keep: mpsc::Sender<()>,
    }

    /// Creates a namespace with `lo` up, or `None` (after saying so) when not running as root.
    pub(crate) fn fresh_namespace() -> Option<FreshNamespace> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (keep, parked) = mpsc::channel::<()>();
        thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread into a new namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                ready_tx.send(Err(io::Error::last_os_error())).unwrap();
                return;
            }
            if let Err(e) = loopback_up() {
                ready_tx.send(Err(e)).unwrap();
                return;
            }
            // SAFETY: gettid has no preconditions.
            ready_tx.send(Ok(unsafe { libc::gettid() })).unwrap();
            let _ = parked.recv();
        });
        match ready_rx.recv().unwrap() {
            Ok(tid) => Some(FreshNamespace { path: format!("/proc/self/task/{tid}/ns/net").into(), _keep: keep }),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipping: cannot create a network namespace without root ({e})");
                None
            }
            Err(e) => panic!("cannot prepare a network namespace: {e}"),
        }
    }

    /// `ip link set lo up`, for the calling thread's namespace.
    fn loopback_up() -> io::Result<()> {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which outlives both calls;
        // `ifru_flags` is the union member those requests use.
        unsafe {
            if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    #[test]
    fn netns_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Netns>();
    }

    #[test]
    fn listener_in_namespace_is_reachable_only_from_inside() {
        let Some(ns) = fresh_namespace() else { return };
        let netns = Netns::open(&ns.path).unwrap();
        let inside = netns.bind(loopback(0)).unwrap();
        let port = inside.local_addr().unwrap().port();

        // From the host namespace the same address is someone else (usually nobody).
        match TcpStream::connect_timeout(&loopback(port), CONNECT_TIMEOUT) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
            Ok(_other_listener) => {
                let e = inside.accept().expect_err("a host connection reached the namespace listener");
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            }
        }

        let mut client = netns.connect(loopback(port)).unwrap();
        client.set_nonblocking(false).unwrap();
        inside.set_nonblocking(false).unwrap();
        let (mut server, _) = inside.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut buf = [0; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").unwrap();
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[test]
    fn connect_error_names_namespace_and_address() {
        let Some(ns) = fresh_namespace() else { return };
        let netns = Netns::open(&ns.path).unwrap();
        // Nothing listens in a fresh namespace: bind then drop to find a closed port.
        let port = netns.bind(loopback(0)).unwrap().local_addr().unwrap().port();
        let err = netns.connect(loopback(port)).unwrap_err().to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains(&ns.path.display().to_string()), "{err}");
    }

    #[test]
    fn open_missing_namespace_names_path() {
        let err = Netns::open(Path::new("/proc/self/ns/no-such-namespace")).unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }));
        assert!(err.to_string().contains("/proc/self/ns/no-such-namespace"), "{err}");
    }

    #[test]
    fn open_rejects_a_file_that_is_not_a_namespace() {
        let err = Netns::open(Path::new("/proc/self/status")).unwrap_err();
        assert!(matches!(err, NetnsError::Enter { .. }), "{err}");
    }

    #[tokio::test]
    async fn of_own_pid_makes_host_sockets() {
        let netns = Netns::of_pid(std::process::id()).unwrap();
        let listener = tokio::net::TcpListener::from_std(netns.bind(loopback(0)).unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        client.unwrap();
        server.unwrap();
        // Bound in our own namespace, so connect_tokio reaches a host listener too.
        let (client, server) = tokio::join!(netns.connect_tokio(addr), listener.accept());
        client.unwrap();
        server.unwrap();
    }

    #[tokio::test]
    async fn forward_reaches_a_listener_inside_the_namespace() {
        let Some(ns) = fresh_namespace() else { return };
        let netns = Arc::new(Netns::open(&ns.path).unwrap());
        let inside = tokio::net::TcpListener::from_std(netns.bind(loopback(0)).unwrap()).unwrap();
        let target = inside.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            loop {
                let (mut stream, _) = inside.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                });
            }
        });

        let host = tokio::net::TcpListener::bind(loopback(0)).await.unwrap();
        let host_addr = host.local_addr().unwrap();
        let forwarder = forward(netns.clone(), host, target);

        for message in [&b"first"[..], b"second"] {
            let mut client = tokio::net::TcpStream::connect(host_addr).await.unwrap();
            client.write_all(message).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, message);
        }

        // The async connect works on its own too.
        let mut direct = netns.connect_tokio(target).await.unwrap();
        direct.write_all(b"direct").await.unwrap();
        let mut buf = [0; 6];
        direct.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"direct");

        forwarder.abort();
        assert!(forwarder.await.unwrap_err().is_cancelled());
        echo.abort();
    }
}
