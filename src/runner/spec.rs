//! The OCI runtime bundle a plugin runs in: a pure function from the image config and the
//! [`Sandbox`] the runner grants to a runtime-spec [`Spec`] (runtime-spec 1.0, as runc 1.1
//! reads it), built with `oci_spec::runtime`'s builders, and [`write_bundle`] to put it on
//! disk. No `runc spec` subprocess: every field runc will act on is set here, so the spec
//! can be checked without a runtime.
//!
//! What the plugin gets: the image's entrypoint, environment and working directory, plus
//! `PLUGIN_PORT`, `RUNNER_API_KEY_FILE` and whatever the runner adds, nothing from the host;
//! a non-root user with no capabilities and no new privileges; a read-only root with a small
//! `nosuid,nodev,noexec` tmpfs at `/tmp` and the secrets directory read-only at
//! `/run/secrets`; its own pid, ipc, uts, mount and cgroup namespaces (and network, unless the
//! caller shares the host's); memory (no swap beyond it), CPU and pids limits; no device
//! beyond runc's default set; and [`default_seccomp`], an allowlist in the spirit of
//! Docker's default profile. Unpacking the root filesystem is [`crate::runner::unpack`]'s
//! business; starting runc is the caller's.

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Arch, Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::runner::policy::Limits;

/// Where the plugin's network namespace comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Share the host's network namespace (the conformance harness reaches the plugin on a
    /// loopback port of the host).
    Host,
    /// A fresh network namespace: only loopback (runc brings `lo` up).
    Isolated,
}

/// What the sandbox gives the plugin, beyond what its image config says.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub uid: u32,
    pub gid: u32,
    /// `PLUGIN_PORT`: where the plugin listens.
    pub port: u16,
    /// Absolute path of the unpacked root filesystem; mounted read-only, so instances may share it.
    pub rootfs: PathBuf,
    /// Host directory bind-mounted read-only (`nosuid,nodev,noexec`) at `/run/secrets`.
    pub secrets: PathBuf,
    pub limits: Limits,
    pub network: Network,
    /// Extra environment set by the runner (e.g. `HTTP_PROXY`), after the image's `Env`;
    /// it wins over an image variable of the same name.
    pub env: Vec<(String, String)>,
    pub hostname: String,
}

/// A sandbox or image config the spec cannot be built from; `field` names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("building the runtime spec ({what}): {source}")]
    Build { what: &'static str, source: OciSpecError },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid { field, reason: reason.into() }
}

fn built<T>(what: &'static str) -> impl FnOnce(Result<T, OciSpecError>) -> Result<T, SpecError> {
    move |r| r.map_err(|source| SpecError::Build { what, source })
}

/// Where the runner API key is, inside the container.
const SECRETS_DIR: &str = "/run/secrets";
const KEY_FILE: &str = "/run/secrets/runner_api_key";
/// Variables the runner always sets; the image's values for them are dropped.
const PLUGIN_PORT: &str = "PLUGIN_PORT";
const RUNNER_API_KEY_FILE: &str = "RUNNER_API_KEY_FILE";
const DEFAULT_PATH: &str = "PATH=/usr/bin:/bin";

/// The manifest's resource requests, clamped and defaulted by the default runner policy.
pub fn limits_for(manifest: &crate::plugin::PluginManifest) -> Limits {
    let p = crate::runner::policy::LimitsPolicy::default();
    let r = manifest.resources.as_ref();
    let pick = |asked: Option<u64>, default: u64, max: u64| asked.unwrap_or(default).clamp(1, max);
    Limits {
        cpu_millicores: pick(r.and_then(|r| r.cpu_millicores), p.default_cpu_millicores, p.max_cpu_millicores),
        memory_mib: pick(r.and_then(|r| r.memory_mib), p.default_memory_mib, p.max_memory_mib),
        pids: pick(r.and_then(|r| r.pids), p.default_pids, p.max_pids),
    }
}

/// `uid:gid` from the image config's `User` (numeric only: there is no /etc/passwd to read);
/// root is refused.
pub fn image_user(image_config: &Value) -> Result<(u32, u32), String> {
    let u = image_config.pointer("/config/User").and_then(Value::as_str).unwrap_or("");
    let (uid, gid) = u.split_once(':').unwrap_or((u, u));
    match (uid.parse::<u32>(), gid.parse::<u32>()) {
        (Ok(0), _) => Err("the image runs as root (config.User); plugins must not".to_string()),
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(format!("config.User {u:?} is not a numeric uid:gid")),
    }
}

/// The runtime spec runc runs the plugin with (see the module documentation). Pure.
pub fn build_spec(image_config: &Value, sandbox: &Sandbox) -> Result<Spec, SpecError> {
    check_sandbox(sandbox)?;
    let mut args = string_list(image_config, "Entrypoint", "config.Entrypoint")?;
    args.extend(string_list(image_config, "Cmd", "config.Cmd")?);
    if args.is_empty() {
        return Err(invalid("config.Entrypoint", "Entrypoint and Cmd are both empty: nothing to run"));
    }
    let cwd =
        image_config.pointer("/config/WorkingDir").and_then(Value::as_str).filter(|w| !w.is_empty()).unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(invalid("config.WorkingDir", format!("{cwd:?} is not an absolute path")));
    }

    let user = UserBuilder::default().uid(sandbox.uid).gid(sandbox.gid).additional_gids(Vec::<u32>::new()).build();
    let none = Capabilities::new;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(none())
        .effective(none())
        .inheritable(none())
        .permitted(none())
        .ambient(none())
        .build();
    let nofile = PosixRlimitBuilder::default().typ(PosixRlimitType::RlimitNofile).hard(1024u64).soft(1024u64).build();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(built("process.user")(user)?)
        .args(args)
        .env(environment(image_config, sandbox)?)
        .cwd(cwd)
        .capabilities(built("process.capabilities")(capabilities)?)
        .rlimits(vec![built("process.rlimits")(nofile)?])
        .no_new_privileges(true)
        .build();

    let root = RootBuilder::default().path(sandbox.rootfs.clone()).readonly(true).build();
    let spec = SpecBuilder::default()
        .version("1.0.2-dev")
        .root(built("root")(root)?)
        .mounts(mounts(sandbox)?)
        .process(built("process")(process)?)
        .hostname(sandbox.hostname.clone())
        .linux(linux(sandbox)?)
        .build();
    built("spec")(spec)
}

fn check_sandbox(sandbox: &Sandbox) -> Result<(), SpecError> {
    if !sandbox.rootfs.is_absolute() {
        return Err(invalid("sandbox.rootfs", format!("{} is not an absolute path", sandbox.rootfs.display())));
    }
    if !sandbox.secrets.is_absolute() {
        return Err(invalid("sandbox.secrets", format!("{} is not an absolute path", sandbox.secrets.display())));
    }
    if sandbox.uid == 0 {
        return Err(invalid("sandbox.uid", "0 is root; plugins must not run as root"));
    }
    // Zero means "unlimited" to runc for every one of these: refuse it rather than run unbounded.
    let Limits { cpu_millicores, memory_mib, pids } = sandbox.limits;
    for (field, value) in [
        ("sandbox.limits.cpu_millicores", cpu_millicores),
        ("sandbox.limits.memory_mib", memory_mib),
        ("sandbox.limits.pids", pids),
    ] {
        if value == 0 {
            return Err(invalid(field, "0 would mean no limit"));
        }
    }
    // sethostname(2) takes at most 64 bytes.
    if sandbox.hostname.len() > 64 || sandbox.hostname.contains('\0') {
        return Err(invalid("sandbox.hostname", format!("{:?} is not a valid host name", sandbox.hostname)));
    }
    Ok(())
}

/// `config.<key>` of the image config as strings; absent or null is empty.
fn string_list(image_config: &Value, key: &str, field: &'static str) -> Result<Vec<String>, SpecError> {
    match image_config.get("config").and_then(|c| c.get(key)) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| invalid(field, format!("{v} is not a string"))))
            .collect(),
        Some(other) => Err(invalid(field, format!("{other} is not a list of strings"))),
    }
}

/// The image's `Env` (with a default `PATH`), then the runner's variables, which win: the
/// image's entries of the same names are dropped, since `getenv` returns the first match.
fn environment(image_config: &Value, sandbox: &Sandbox) -> Result<Vec<String>, SpecError> {
    let mut runner = vec![format!("{PLUGIN_PORT}={}", sandbox.port), format!("{RUNNER_API_KEY_FILE}={KEY_FILE}")];
    let mut runner_keys = vec![PLUGIN_PORT, RUNNER_API_KEY_FILE];
    for (key, value) in &sandbox.env {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(invalid("sandbox.env", format!("key {key:?} is empty or contains '=' or NUL")));
        }
        if value.contains('\0') {
            return Err(invalid("sandbox.env", format!("the value of {key} contains NUL")));
        }
        if runner_keys.contains(&key.as_str()) {
            return Err(invalid("sandbox.env", format!("{key} is set twice (or is one the runner always sets)")));
        }
        runner_keys.push(key);
        runner.push(format!("{key}={value}"));
    }
    let image = string_list(image_config, "Env", "config.Env")?;
    let mut env = Vec::with_capacity(image.len() + runner.len() + 1);
    for entry in image {
        let Some((key, _)) = entry.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(invalid("config.Env", format!("{entry:?} is not NAME=VALUE")));
        };
        if entry.contains('\0') {
            return Err(invalid("config.Env", format!("{key} contains NUL")));
        }
        if !runner_keys.contains(&key) {
            env.push(entry);
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    env.extend(runner);
    Ok(env)
}

fn mount(destination: &str, typ: &str, source: impl Into<PathBuf>, options: &[&str]) -> Result<Mount, SpecError> {
    let m = MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source.into())
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build();
    built("mounts")(m)
}

/// runc's default mounts, a small `/tmp` and the secrets. (runc 1.1 gives a tmpfs the mode of
/// the directory it covers when the root filesystem has one: images ship `/tmp` as 1777.)
fn mounts(sandbox: &Sandbox) -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        built("mounts")(MountBuilder::default().destination("/proc").typ("proc").source("proc").build())?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"])?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"])?,
        mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "noexec", "mode=1777", "size=16m"])?,
        mount(SECRETS_DIR, "bind", sandbox.secrets.clone(), &["rbind", "ro", "nosuid", "nodev", "noexec"])?,
    ])
}

fn namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace, SpecError> {
    built("linux.namespaces")(LinuxNamespaceBuilder::default().typ(typ).build())
}

fn linux(sandbox: &Sandbox) -> Result<oci_spec::runtime::Linux, SpecError> {
    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ] {
        namespaces.push(namespace(typ)?);
    }
    // No path: runc makes a new one, with only `lo` (which it brings up).
    if sandbox.network == Network::Isolated {
        namespaces.push(namespace(LinuxNamespaceType::Network)?);
    }

    let Limits { cpu_millicores, memory_mib, pids } = sandbox.limits;
    let memory = memory_mib
        .checked_mul(1 << 20)
        .and_then(|b| i64::try_from(b).ok())
        .ok_or_else(|| invalid("sandbox.limits.memory_mib", "too large"))?;
    // CFS: `quota` microseconds of CPU per 100 ms `period`; 1000 millicores = one core.
    let quota = cpu_millicores
        .checked_mul(100)
        .and_then(|q| i64::try_from(q).ok())
        .ok_or_else(|| invalid("sandbox.limits.cpu_millicores", "too large"))?;
    let pids = i64::try_from(pids).map_err(|_| invalid("sandbox.limits.pids", "too large"))?;
    // `swap` is memory + swap: equal to the limit means no swap at all.
    let memory = built("linux.resources.memory")(LinuxMemoryBuilder::default().limit(memory).swap(memory).build())?;
    let cpu = built("linux.resources.cpu")(LinuxCpuBuilder::default().period(100_000u64).quota(quota).build())?;
    let pids = built("linux.resources.pids")(LinuxPidsBuilder::default().limit(pids).build())?;
    // Deny every device; runc adds its default set (null, zero, full, random, urandom, tty, ptmx…).
    let deny_all =
        built("linux.resources.devices")(LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build())?;
    let resources = LinuxResourcesBuilder::default().devices(vec![deny_all]).memory(memory).cpu(cpu).pids(pids).build();

    let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(built("linux.resources")(resources)?)
        .masked_paths(paths(&[
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ]))
        .readonly_paths(paths(&[
            "/proc/asound",
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]))
        .seccomp(default_seccomp())
        .build();
    built("linux")(linux)
}

/// Syscalls allowed without condition: what a static Rust or glibc program, the Go runtime
/// (runc's init runs a few after the filter is loaded, up to `execve`) and a Python
/// interpreter use, in the spirit of Docker's default profile. Left out on purpose:
/// everything that mounts, changes root, enters or makes namespaces (`mount`, `umount2`,
/// `pivot_root`, `chroot`, `unshare`, `setns`, the new mount API), looks into other processes
/// (`ptrace`, `process_vm_readv`/`writev`, `kcmp`, `pidfd_getfd`, `process_madvise`), loads
/// code into or reconfigures the kernel (`kexec_*`, `*_module`, `bpf`, `perf_event_open`,
/// `reboot`, `swapon`/`swapoff`, `acct`, `quotactl*`, `syslog`, `iopl`, `ioperm`, `vm86*`,
/// `uselib`, `lookup_dcookie`), the keyring (`keyctl`, `add_key`, `request_key`), file
/// handles (`open_by_handle_at`, `name_to_handle_at`), `userfaultfd`, `fanotify_init`,
/// clocks (`settimeofday`, `clock_settime*`, `adjtimex`, `clock_adjtime*`), NUMA policy,
/// `io_uring_*` (a frequent source of kernel bugs; Docker dropped it too) and `socketcall`
/// (it would bypass the address-family check on `socket`). Names libseccomp does not know
/// (newer or other-architecture calls) are skipped by runc. Sorted.
pub const ALLOWED_SYSCALLS: &[&str] = &[
    "_llseek",
    "_newselect",
    "accept",
    "accept4",
    "access",
    "alarm",
    "arch_prctl",
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "bind",
    "breakpoint",
    "brk",
    "cacheflush",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "set_tls",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "sync_file_range2",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// `clone` flags that make namespaces. Unprivileged processes may still make a user
/// namespace (and the others inside it), so `clone` is allowed only without them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x0002_0000 // CLONE_NEWNS
    | 0x0200_0000 // CLONE_NEWCGROUP
    | 0x0400_0000 // CLONE_NEWUTS
    | 0x0800_0000 // CLONE_NEWIPC
    | 0x1000_0000 // CLONE_NEWUSER
    | 0x2000_0000 // CLONE_NEWPID
    | 0x4000_0000; // CLONE_NEWNET
/// Address families `socket` may open: Unix, IPv4, IPv6 and netlink (glibc's `getaddrinfo`
/// asks it for interface addresses). Not `AF_VSOCK`, which reaches the hypervisor whatever
/// the network namespace, nor raw packet sockets.
const SOCKET_FAMILIES: &[u64] = &[1, 2, 10, 16];
/// `personality` values that change nothing dangerous: `PER_LINUX`, `UNAME26`,
/// `PER_LINUX32`, `PER_LINUX32|UNAME26`, and `0xffffffff` to query.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The default seccomp profile: anything not allowed fails with `EPERM`. [`ALLOWED_SYSCALLS`]
/// unconditionally; `clone` without namespace flags; `clone3` fails with `ENOSYS` (its flags
/// are behind a pointer seccomp cannot read, and glibc, Rust and Go then fall back to
/// `clone`); `socket` for [`SOCKET_FAMILIES`]; `personality` for the harmless values.
pub fn default_seccomp() -> LinuxSeccomp {
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // One rule; `arg0` is a condition on the first argument (conditions in one rule are ANDed,
    // so alternatives are separate rules).
    let rule = |names: Vec<String>, action, errno: Option<u32>, arg0: Option<(LinuxSeccompOperator, u64, u64)>| {
        let mut r = LinuxSyscallBuilder::default().names(names).action(action);
        if let Some(errno) = errno {
            r = r.errno_ret(errno);
        }
        if let Some((op, value, value_two)) = arg0 {
            let mut a = LinuxSeccompArgBuilder::default().index(0usize).op(op).value(value);
            // For SCMP_CMP_MASKED_EQ `value` is the mask and `valueTwo` what the masked bits must equal.
            if op == LinuxSeccompOperator::ScmpCmpMaskedEq {
                a = a.value_two(value_two);
            }
            r = r.args(vec![a.build().expect("a seccomp argument has every field")]);
        }
        r.build().expect("a seccomp rule has every field")
    };
    let allow = LinuxSeccompAction::ScmpActAllow;
    let eq = |value| Some((LinuxSeccompOperator::ScmpCmpEq, value, 0));
    let mut syscalls: Vec<LinuxSyscall> = vec![
        rule(names(ALLOWED_SYSCALLS), allow, None, None),
        rule(names(&["clone"]), allow, None, Some((LinuxSeccompOperator::ScmpCmpMaskedEq, CLONE_NAMESPACE_FLAGS, 0))),
        rule(names(&["clone3"]), LinuxSeccompAction::ScmpActErrno, Some(ENOSYS), None),
    ];
    for &family in SOCKET_FAMILIES {
        syscalls.push(rule(names(&["socket"]), allow, None, eq(family)));
    }
    for &persona in PERSONALITIES {
        syscalls.push(rule(names(&["personality"]), allow, None, eq(persona)));
    }
    let architectures = if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        // The native architecture only (libseccomp always adds it).
        vec![]
    };
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(architectures)
        .syscalls(syscalls)
        .build()
        .expect("the seccomp profile has every field")
}

/// Writes `bundle_dir/config.json` atomically: a temporary file in the same directory,
/// flushed to disk, then renamed over it.
pub fn write_bundle(bundle_dir: &Path, spec: &Spec) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(spec).map_err(std::io::Error::other)?;
    let mut tmp = tempfile::Builder::new().prefix(".config.json.").tempfile_in(bundle_dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(bundle_dir.join("config.json")).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sandbox(network: Network) -> Sandbox {
        Sandbox {
            uid: 65532,
            gid: 65532,
            port: 9000,
            rootfs: PathBuf::from("/bundle/rootfs"),
            secrets: PathBuf::from("/s"),
            limits: Limits { cpu_millicores: 250, memory_mib: 64, pids: 32 },
            network,
            env: vec![],
            hostname: "plugin".to_string(),
        }
    }

    fn image() -> Value {
        json!({"config": {"User": "65532:65532", "Entrypoint": ["/plugin"], "Env": ["PATH=/"], "WorkingDir": "/"}})
    }

    fn spec_json(image: &Value, sandbox: &Sandbox) -> Value {
        serde_json::to_value(build_spec(image, sandbox).unwrap()).unwrap()
    }

    fn has_namespace(rt: &Value, typ: &str) -> bool {
        rt["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n["type"] == typ)
    }

    #[test]
    fn the_spec_is_narrowed_to_the_sandbox() {
        let rt = spec_json(&image(), &sandbox(Network::Host));
        assert_eq!(rt["process"]["user"], json!({"uid": 65532, "gid": 65532, "additionalGids": []}));
        assert_eq!(rt["process"]["args"], json!(["/plugin"]));
        assert_eq!(
            rt["process"]["env"],
            json!(["PATH=/", "PLUGIN_PORT=9000", "RUNNER_API_KEY_FILE=/run/secrets/runner_api_key"])
        );
        assert_eq!(rt["process"]["cwd"], "/");
        assert_eq!(rt["process"]["terminal"], false);
        for set in ["bounding", "effective", "inheritable", "permitted", "ambient"] {
            assert_eq!(rt["process"]["capabilities"][set], json!([]), "{set}");
        }
        assert_eq!(rt["process"]["noNewPrivileges"], true);
        assert_eq!(rt["process"]["rlimits"], json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]));
        assert!(rt["process"].get("oomScoreAdj").is_none());
        assert_eq!(rt["root"], json!({"path": "/bundle/rootfs", "readonly": true}));
        assert_eq!(rt["hostname"], "plugin");
        assert_eq!(rt["linux"]["resources"]["memory"], json!({"limit": 64 << 20, "swap": 64 << 20}));
        assert_eq!(rt["linux"]["resources"]["cpu"], json!({"period": 100_000, "quota": 25_000}));
        assert_eq!(rt["linux"]["resources"]["pids"], json!({"limit": 32}));
        assert_eq!(rt["linux"]["resources"]["devices"], json!([{"allow": false, "access": "rwm"}]));
        assert!(rt["linux"]["maskedPaths"].as_array().unwrap().contains(&json!("/proc/kcore")));
        assert!(rt["linux"]["readonlyPaths"].as_array().unwrap().contains(&json!("/proc/sys")));

        let mounts = rt["mounts"].as_array().unwrap();
        let find = |d: &str| mounts.iter().find(|m| m["destination"] == d).unwrap_or_else(|| panic!("{d} mount"));
        let destinations: Vec<&str> = mounts.iter().map(|m| m["destination"].as_str().unwrap()).collect();
        assert_eq!(
            destinations,
            ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/tmp", "/run/secrets"]
        );
        assert_eq!(find("/proc")["type"], "proc");
        assert_eq!(find("/tmp")["type"], "tmpfs");
        assert_eq!(find("/tmp")["options"], json!(["nosuid", "nodev", "noexec", "mode=1777", "size=16m"]));
        let secrets = find("/run/secrets");
        assert_eq!(secrets["type"], "bind");
        assert_eq!(secrets["source"], "/s");
        assert_eq!(secrets["options"], json!(["rbind", "ro", "nosuid", "nodev", "noexec"]));
        assert!(find("/sys")["options"].as_array().unwrap().contains(&json!("ro")));

        for ns in ["pid", "ipc", "uts", "mount", "cgroup"] {
            assert!(has_namespace(&rt, ns), "{ns}");
        }
        assert!(!has_namespace(&rt, "network"));
    }

    #[test]
    fn an_isolated_sandbox_gets_its_own_network_namespace() {
        let rt = spec_json(&image(), &sandbox(Network::Isolated));
        let net: Vec<&Value> =
            rt["linux"]["namespaces"].as_array().unwrap().iter().filter(|n| n["type"] == "network").collect();
        assert_eq!(net, [&json!({"type": "network"})], "a new one: no path");
        assert!(!has_namespace(&spec_json(&image(), &sandbox(Network::Host)), "network"));
    }

    #[test]
    fn the_environment_is_the_images_then_the_runners_and_nothing_from_the_host() {
        let mut s = sandbox(Network::Isolated);
        s.env = vec![("HTTP_PROXY".into(), "http://10.0.0.1:3128".into())];
        let image = json!({"config": {"Cmd": ["python3", "-m", "plugin"], "WorkingDir": "/app",
                                      "Env": ["LANG=C.UTF-8", "HTTP_PROXY=http://evil", "PLUGIN_PORT=1"]}});
        let rt = spec_json(&image, &s);
        assert_eq!(
            rt["process"]["env"],
            json!([
                "PATH=/usr/bin:/bin",
                "LANG=C.UTF-8",
                "PLUGIN_PORT=9000",
                "RUNNER_API_KEY_FILE=/run/secrets/runner_api_key",
                "HTTP_PROXY=http://10.0.0.1:3128"
            ])
        );
        assert_eq!(rt["process"]["args"], json!(["python3", "-m", "plugin"]));
        assert_eq!(rt["process"]["cwd"], "/app");
    }

    fn allowed(profile: &Value, name: &str) -> bool {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "SCMP_ACT_ALLOW" && r["names"].as_array().unwrap().contains(&json!(name)))
    }

    #[test]
    fn the_default_seccomp_profile_is_an_allowlist() {
        let rt = spec_json(&image(), &sandbox(Network::Host));
        let profile = &rt["linux"]["seccomp"];
        assert_eq!(profile, &serde_json::to_value(default_seccomp()).unwrap());
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], 1);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(profile["architectures"], json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
        }
        for name in
            ["read", "write", "openat", "futex", "socket", "connect", "accept4", "clone", "execve", "exit_group"]
        {
            assert!(allowed(profile, name), "{name} must be allowed");
        }
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "unshare",
            "setns",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "reboot",
            "swapon",
            "swapoff",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "open_by_handle_at",
            "name_to_handle_at",
            "userfaultfd",
            "acct",
            "quotactl",
            "syslog",
            "iopl",
            "ioperm",
            "settimeofday",
            "clock_settime",
            "adjtimex",
            "clock_adjtime",
            "lookup_dcookie",
            "fanotify_init",
            "kcmp",
            "vm86",
            "vm86old",
            "uselib",
            "clone3",
            "socketcall",
            "io_uring_setup",
        ] {
            assert!(!allowed(profile, name), "{name} must not be allowed");
        }
        // clone only without namespace flags; clone3 says ENOSYS so libc falls back to clone.
        let rules = profile["syscalls"].as_array().unwrap();
        let clone = rules.iter().find(|r| r["names"] == json!(["clone"])).unwrap();
        assert_eq!(
            clone["args"],
            json!([{"index": 0, "value": 0x7E02_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        let clone3 = rules.iter().find(|r| r["names"] == json!(["clone3"])).unwrap();
        assert_eq!((&clone3["action"], &clone3["errnoRet"]), (&json!("SCMP_ACT_ERRNO"), &json!(38)));
        // socket only for unix, inet, inet6 and netlink; personality only with harmless values.
        let families: Vec<&Value> =
            rules.iter().filter(|r| r["names"] == json!(["socket"])).map(|r| &r["args"][0]["value"]).collect();
        assert_eq!(families, [&json!(1), &json!(2), &json!(10), &json!(16)]);
        assert!(
            rules.iter().filter(|r| r["names"] == json!(["personality"])).all(|r| r["args"][0]["op"] == "SCMP_CMP_EQ")
        );
    }

    #[test]
    fn the_allowlist_is_sorted_and_unique() {
        assert!(ALLOWED_SYSCALLS.windows(2).all(|w| w[0] < w[1]), "sort ALLOWED_SYSCALLS and drop duplicates");
    }

    fn error_field(image: &Value, sandbox: &Sandbox) -> &'static str {
        match build_spec(image, sandbox) {
            Err(SpecError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn build_spec_rejects_what_it_cannot_run_naming_the_field() {
        let mut s = sandbox(Network::Host);
        s.rootfs = PathBuf::from("rootfs");
        assert_eq!(error_field(&image(), &s), "sandbox.rootfs");
        let e = build_spec(&image(), &s).unwrap_err().to_string();
        assert!(e.starts_with("sandbox.rootfs: rootfs"), "{e}");

        let mut s = sandbox(Network::Host);
        s.uid = 0;
        assert_eq!(error_field(&image(), &s), "sandbox.uid");

        let s = sandbox(Network::Host);
        assert_eq!(error_field(&json!({"config": {"Entrypoint": [], "Cmd": null}}), &s), "config.Entrypoint");
        assert_eq!(error_field(&json!({}), &s), "config.Entrypoint");
        assert_eq!(error_field(&json!({"config": {"Cmd": [1]}}), &s), "config.Cmd");
        assert_eq!(error_field(&json!({"config": {"Cmd": ["/p"], "Env": ["NOEQUALS"]}}), &s), "config.Env");

        let mut s = sandbox(Network::Host);
        s.env = vec![("A=B".into(), "c".into())];
        assert_eq!(error_field(&image(), &s), "sandbox.env");
        let e = build_spec(&image(), &s).unwrap_err().to_string();
        assert!(e.contains("\"A=B\""), "{e}");
        s.env = vec![("PLUGIN_PORT".into(), "1".into())];
        assert_eq!(error_field(&image(), &s), "sandbox.env");

        let mut s = sandbox(Network::Host);
        s.limits.memory_mib = 0;
        assert_eq!(error_field(&image(), &s), "sandbox.limits.memory_mib");
    }

    #[test]
    fn image_user_must_be_numeric_and_not_root() {
        assert_eq!(image_user(&json!({"config": {"User": "65532:65532"}})), Ok((65532, 65532)));
        assert_eq!(image_user(&json!({"config": {"User": "1000"}})), Ok((1000, 1000)));
        assert!(image_user(&json!({"config": {"User": "0:0"}})).unwrap_err().contains("root"));
        assert!(image_user(&json!({"config": {}})).is_err());
        assert!(image_user(&json!({"config": {"User": "app"}})).unwrap_err().contains("numeric"));
    }

    #[test]
    fn write_bundle_writes_config_json_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let spec = build_spec(&image(), &sandbox(Network::Isolated)).unwrap();
        std::fs::write(dir.path().join("config.json"), b"old").unwrap();
        write_bundle(dir.path(), &spec).unwrap();
        assert_eq!(Spec::load(dir.path().join("config.json")).unwrap(), spec);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["config.json"], "no temporary file left behind");
    }
}
