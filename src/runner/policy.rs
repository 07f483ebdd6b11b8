//! The runner's install policy: one TOML file (`schemas/runner-policy.v1.schema.json`
//! documents it) and [`decide`], which evaluates it against one plugin image and explains
//! every aspect of the decision, allowed or not (`berth policy explain` prints it).
//!
//! Inputs: the image reference (it must carry a digest), the plugin manifest (publisher,
//! name, capabilities, `network.outbound_hosts`, `resources`, `secrets`), whether the image
//! and the plugin-manifest artifact are signed by a trusted publisher key (the caller
//! verifies; see `crate::sign`), the tenant admin's approval (a list of approved image
//! digests in the policy for now; the tenant index of `DESIGN.md` later), the deployment
//! profile (`mode`: first-party only, or third-party allowed) and the lifecycle status.
//!
//! Rules: deny lists win over allow lists; an absent allow list allows everything not
//! denied, an empty one allows nothing. Outbound hosts are the intersection of the manifest's
//! hosts with `allowed_egress` (a host the policy does not allow refuses the install; `*`
//! allows any host and must be written out). Resource requests are clamped to the policy's
//! maxima, and the defaults apply when the manifest requests nothing. Secrets mounted are
//! the manifest's `secrets` that `allowed_secrets` lists. Lifecycle `insecure` and `removed`
//! refuse, `deprecated` warns.
//!
//! ```toml
//! mode = "first-party"                      # or "third-party"
//! first_party_publishers = ["aisopsflow"]
//! allowed_registries = ["127.0.0.1:5000"]
//! require_signatures = true
//! require_approval = true
//! approved_digests = ["sha256:…"]
//! allowed_capabilities = ["outbound_http", "secrets_read", "filesystem_tmp", "metrics"]
//! allowed_egress = ["api.example.com"]
//! allowed_secrets = ["runner_api_key"]
//! [limits]
//! max_cpu_millicores = 1000
//! ```

use crate::oci::{Digest, ImageReference};
use crate::plugin::{Capability, PluginManifest, check_outbound_host};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

/// `api_version` of a policy file (the only one there is).
pub const POLICY_API_VERSION: &str = "aisopsflow.dev/runner-policy/v1";
/// The secret holding the per-instance runner API key: always mounted, never from the policy.
pub const RUNNER_API_KEY_SECRET: &str = "runner_api_key";
/// An `allowed_egress` entry that allows every host; never implied.
pub const ANY_HOST: &str = "*";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid runner policy:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// The deployment profile: whose plugins may run at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Only publishers listed in `first_party_publishers`.
    #[default]
    FirstParty,
    /// Any publisher the allow/deny lists admit.
    ThirdParty,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::FirstParty => "first-party",
            Mode::ThirdParty => "third-party",
        }
    }
}

/// Resource defaults (when the manifest requests nothing) and maxima (requests are clamped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsPolicy {
    pub default_cpu_millicores: u64,
    pub max_cpu_millicores: u64,
    pub default_memory_mib: u64,
    pub max_memory_mib: u64,
    pub default_pids: u64,
    pub max_pids: u64,
}

impl Default for LimitsPolicy {
    fn default() -> Self {
        LimitsPolicy {
            default_cpu_millicores: 250,
            max_cpu_millicores: 1000,
            default_memory_mib: 128,
            max_memory_mib: 512,
            default_pids: 64,
            max_pids: 256,
        }
    }
}

/// A runner policy file. Every field has a default; the defaults are strict (first-party
/// only, signatures and approval required, no egress, no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub api_version: String,
    pub mode: Mode,
    pub first_party_publishers: Vec<String>,
    /// Registry hosts (`host[:port]`) images may come from; absent: any not denied.
    pub allowed_registries: Option<Vec<String>>,
    pub denied_registries: Vec<String>,
    /// Publisher names; absent: any not denied.
    pub allowed_publishers: Option<Vec<String>>,
    pub denied_publishers: Vec<String>,
    /// Plugins as `publisher/name`; absent: any not denied.
    pub allowed_plugins: Option<Vec<String>>,
    pub denied_plugins: Vec<String>,
    /// Image and plugin-manifest artifact must be signed by a trusted publisher key.
    pub require_signatures: bool,
    /// The image digest must be in `approved_digests` (the tenant admin's approval).
    pub require_approval: bool,
    pub approved_digests: Vec<String>,
    /// Capabilities a plugin may request; absent: every capability.
    pub allowed_capabilities: Option<Vec<Capability>>,
    /// Hosts (`host` or `host:port`) plugins may call; `*` allows any host.
    pub allowed_egress: Vec<String>,
    /// Secret names that may be mounted into a plugin.
    pub allowed_secrets: Vec<String>,
    pub limits: LimitsPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            api_version: POLICY_API_VERSION.to_string(),
            mode: Mode::FirstParty,
            first_party_publishers: Vec::new(),
            allowed_registries: None,
            denied_registries: Vec::new(),
            allowed_publishers: None,
            denied_publishers: Vec::new(),
            allowed_plugins: None,
            denied_plugins: Vec::new(),
            require_signatures: true,
            require_approval: true,
            approved_digests: Vec::new(),
            allowed_capabilities: None,
            allowed_egress: Vec::new(),
            allowed_secrets: Vec::new(),
            limits: LimitsPolicy::default(),
        }
    }
}

impl Policy {
    /// Reads, parses and validates the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Read { path: path.display().to_string(), source })?;
        Policy::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates policy TOML; `origin` names it in a parse error.
    pub fn from_toml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text)
            .map_err(|e| PolicyError::Parse { path: origin.to_string(), message: e.to_string() })?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks everything and reports every problem found, each naming its field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut problems = Vec::new();
        if self.api_version != POLICY_API_VERSION {
            problems.push(format!("api_version = {:?} must be {POLICY_API_VERSION:?}", self.api_version));
        }
        check_list(&mut problems, "first_party_publishers", &self.first_party_publishers, check_label);
        if self.mode == Mode::FirstParty && self.first_party_publishers.is_empty() {
            problems.push(
                "first_party_publishers is empty but mode = \"first-party\": no plugin could run; \
                 list the first-party publishers or set mode = \"third-party\""
                    .to_string(),
            );
        }
        let registries = self.allowed_registries.as_deref();
        check_allow_deny(&mut problems, "registries", registries, &self.denied_registries, check_registry);
        let publishers = self.allowed_publishers.as_deref();
        check_allow_deny(&mut problems, "publishers", publishers, &self.denied_publishers, check_label);
        let plugins = self.allowed_plugins.as_deref();
        check_allow_deny(&mut problems, "plugins", plugins, &self.denied_plugins, check_plugin);
        check_list(&mut problems, "approved_digests", &self.approved_digests, |d| {
            d.parse::<Digest>().map(|_| ()).map_err(|e| format!("is not a digest (sha256:<64 hex>): {e}"))
        });
        if let Some(caps) = &self.allowed_capabilities {
            let mut seen = BTreeSet::new();
            for (i, c) in caps.iter().enumerate() {
                if !seen.insert(*c) {
                    problems.push(format!("allowed_capabilities[{i}] = {:?} appears more than once", c.as_str()));
                }
            }
        }
        check_list(&mut problems, "allowed_egress", &self.allowed_egress, |h| {
            if h == ANY_HOST { Ok(()) } else { check_outbound_host(h).map_err(|why| format!("is invalid: {why}")) }
        });
        check_list(&mut problems, "allowed_secrets", &self.allowed_secrets, check_secret_name);
        let l = &self.limits;
        for (name, default, max) in [
            ("cpu_millicores", l.default_cpu_millicores, l.max_cpu_millicores),
            ("memory_mib", l.default_memory_mib, l.max_memory_mib),
            ("pids", l.default_pids, l.max_pids),
        ] {
            if default == 0 {
                problems.push(format!("limits.default_{name} must be greater than 0"));
            }
            if max == 0 {
                problems.push(format!("limits.max_{name} must be greater than 0"));
            }
            if default > max {
                problems.push(format!("limits.default_{name} = {default} exceeds limits.max_{name} = {max}"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(PolicyError::Invalid(problems)) }
    }
}

/// Checks every entry of `list` and reports duplicates, naming `field[i]`.
fn check_list(problems: &mut Vec<String>, field: &str, list: &[String], check: impl Fn(&str) -> Result<(), String>) {
    let mut seen = BTreeSet::new();
    for (i, entry) in list.iter().enumerate() {
        if let Err(why) = check(entry) {
            problems.push(format!("{field}[{i}] = {entry:?} {why}"));
        }
        if !seen.insert(entry.as_str()) {
            problems.push(format!("{field}[{i}] = {entry:?} appears more than once"));
        }
    }
}

fn check_allow_deny(
    problems: &mut Vec<String>,
    what: &str,
    allowed: Option<&[String]>,
    denied: &[String],
    check: fn(&str) -> Result<(), String>,
) {
    let allow_field = format!("allowed_{what}");
    let deny_field = format!("denied_{what}");
    if let Some(allowed) = allowed {
        check_list(problems, &allow_field, allowed, check);
        for (i, entry) in denied.iter().enumerate() {
            if allowed.contains(entry) {
                problems.push(format!("{deny_field}[{i}] = {entry:?} is also in {allow_field}; keep it in one list"));
            }
        }
    }
    check_list(problems, &deny_field, denied, check);
}

/// A publisher or plugin name: a lowercase DNS label, as the plugin manifest schema says.
fn check_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok { Ok(()) } else { Err("must be a lowercase DNS label (a-z, 0-9, '-')".to_string()) }
}

fn check_plugin(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some((publisher, name)) if check_label(publisher).is_ok() && check_label(name).is_ok() => Ok(()),
        _ => Err("must be <publisher>/<name>, each a lowercase DNS label".to_string()),
    }
}

fn check_registry(s: &str) -> Result<(), String> {
    match ImageReference::parse(&format!("{s}/x")) {
        Ok(r) if r.registry == s => Ok(()),
        _ => Err("must be a registry host such as registry.example.com or 127.0.0.1:5000".to_string()),
    }
}

fn check_secret_name(s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok && s.len() <= 128 && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(())
    } else {
        Err("must match ^[A-Za-z_][A-Za-z0-9_]*$ (as plugin manifest secrets do)".to_string())
    }
}

/// Whether the image and the plugin-manifest artifact carry a valid signature by a trusted
/// publisher key. The caller verifies; an unknown key is simply `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignatureState {
    pub image: bool,
    pub manifest: bool,
}

/// The newest lifecycle status the catalog root key signed for the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    Active,
    Deprecated { replacement: Option<String> },
    Insecure { reason: String },
    Removed { reason: String },
}

/// What is being decided on: one image and what is known about it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The image; it must carry a digest.
    pub reference: &'a ImageReference,
    pub manifest: &'a PluginManifest,
    pub signatures: SignatureState,
    /// `None` when no lifecycle status has been published.
    pub lifecycle: Option<&'a Lifecycle>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Refuse,
    Warn,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "ALLOW",
            Verdict::Refuse => "REFUSE",
            Verdict::Warn => "WARN",
        })
    }
}

/// The verdict on one aspect, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `reference`, `registry`, `publisher`, `plugin`, `approval`, `signatures`, `mode`,
    /// `capabilities`, `egress`, `resources`, `secrets` or `lifecycle`.
    pub aspect: &'static str,
    pub verdict: Verdict,
    pub reason: String,
}

/// The limits the plugin runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cpu_millicores: u64,
    pub memory_mib: u64,
    pub pids: u64,
}

/// The outcome: allowed iff no part refuses; one part per aspect, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub parts: Vec<Part>,
    pub limits: Limits,
    /// Outbound hosts the egress proxy lets the plugin reach.
    pub egress: Vec<String>,
    /// Secret names that may be mounted.
    pub secrets: Vec<String>,
}

impl Decision {
    /// The parts that refuse.
    pub fn refusals(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(|p| p.verdict == Verdict::Refuse)
    }

    /// The part for `aspect`.
    pub fn part(&self, aspect: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.aspect == aspect)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            writeln!(f, "{} {}: {}", part.verdict, part.aspect, part.reason)?;
        }
        Ok(())
    }
}

/// Evaluates `policy` for `subject`, explaining every aspect.
pub fn decide(policy: &Policy, subject: &Subject) -> Decision {
    let manifest = subject.manifest;
    let reference = subject.reference;
    let mut parts = Vec::new();
    let mut part =
        |aspect: &'static str, verdict: Verdict, reason: String| parts.push(Part { aspect, verdict, reason });

    let (verdict, reason) = match (&reference.digest, &reference.tag) {
        (Some(d), _) => (Verdict::Allow, format!("{reference} is pinned by digest {d}")),
        (None, Some(tag)) => (
            Verdict::Refuse,
            format!("{reference} names the mutable tag {tag:?} without a digest; install by digest (…@sha256:…)"),
        ),
        (None, None) => (Verdict::Refuse, format!("{reference} carries no digest; install by digest (…@sha256:…)")),
    };
    part("reference", verdict, reason);

    let (verdict, reason) = allow_deny(
        "registry",
        &reference.registry,
        policy.allowed_registries.as_deref(),
        &policy.denied_registries,
        "registries",
    );
    part("registry", verdict, reason);

    let publisher = &manifest.publisher;
    let (verdict, reason) = allow_deny(
        "publisher",
        publisher,
        policy.allowed_publishers.as_deref(),
        &policy.denied_publishers,
        "publishers",
    );
    part("publisher", verdict, reason);

    let plugin = format!("{}/{}", manifest.publisher, manifest.name);
    let (verdict, reason) =
        allow_deny("plugin", &plugin, policy.allowed_plugins.as_deref(), &policy.denied_plugins, "plugins");
    part("plugin", verdict, reason);

    let (verdict, reason) = match (&reference.digest, policy.require_approval) {
        (_, false) => (Verdict::Allow, "tenant approval is not required (require_approval = false)".to_string()),
        (None, true) => (Verdict::Refuse, "no digest to check against the tenant admin's approved_digests".to_string()),
        (Some(d), true) if policy.approved_digests.iter().any(|a| *a == d.to_string()) => {
            (Verdict::Allow, format!("{d} is approved by the tenant admin (in approved_digests)"))
        }
        (Some(d), true) => {
            (Verdict::Refuse, format!("{d} is not approved by the tenant admin (not in approved_digests)"))
        }
    };
    part("approval", verdict, reason);

    let mut unsigned = Vec::new();
    if !subject.signatures.image {
        unsigned.push("image");
    }
    if !subject.signatures.manifest {
        unsigned.push("plugin manifest artifact");
    }
    let (verdict, reason) = match (unsigned.is_empty(), policy.require_signatures) {
        (true, _) => {
            (Verdict::Allow, "image and plugin manifest artifact are signed by a trusted publisher key".to_string())
        }
        (false, true) => (
            Verdict::Refuse,
            format!("{} not signed by a trusted key (require_signatures = true)", unsigned.join(" and ")),
        ),
        (false, false) => (
            Verdict::Warn,
            format!(
                "{} not signed by a trusted key; allowed because require_signatures = false",
                unsigned.join(" and ")
            ),
        ),
    };
    part("signatures", verdict, reason);

    let first_party = policy.first_party_publishers.contains(publisher);
    let (verdict, reason) = match (policy.mode, first_party) {
        (Mode::FirstParty, true) => (
            Verdict::Allow,
            format!("publisher {publisher:?} is first-party (in first_party_publishers); mode = \"first-party\""),
        ),
        (Mode::FirstParty, false) => (
            Verdict::Refuse,
            format!(
                "publisher {publisher:?} is third-party (not in first_party_publishers) and mode = \"first-party\" \
                 allows first-party plugins only"
            ),
        ),
        (Mode::ThirdParty, fp) => (
            Verdict::Allow,
            format!(
                "publisher {publisher:?} is {}; mode = \"third-party\" allows third-party plugins",
                if fp { "first-party" } else { "third-party" }
            ),
        ),
    };
    part("mode", verdict, reason);

    let (verdict, reason) = capabilities(policy, manifest);
    part("capabilities", verdict, reason);

    let (verdict, reason, egress) = egress(policy, manifest);
    part("egress", verdict, reason);

    let (verdict, reason, limits) = resources(&policy.limits, manifest);
    part("resources", verdict, reason);

    let (verdict, reason, secrets) = secrets(policy, manifest);
    part("secrets", verdict, reason);

    let (verdict, reason) = match subject.lifecycle {
        None => (Verdict::Allow, "no lifecycle status published; treated as active".to_string()),
        Some(Lifecycle::Active) => (Verdict::Allow, "status is active".to_string()),
        Some(Lifecycle::Deprecated { replacement: Some(r) }) => {
            (Verdict::Warn, format!("status is deprecated; replace it with {r}"))
        }
        Some(Lifecycle::Deprecated { replacement: None }) => {
            (Verdict::Warn, "status is deprecated (no replacement named)".to_string())
        }
        Some(Lifecycle::Insecure { reason }) => (Verdict::Refuse, format!("status is insecure: {reason}")),
        Some(Lifecycle::Removed { reason }) => (Verdict::Refuse, format!("status is removed: {reason}")),
    };
    part("lifecycle", verdict, reason);

    let allowed = !parts.iter().any(|p| p.verdict == Verdict::Refuse);
    Decision { allowed, parts, limits, egress, secrets }
}

/// Deny wins; then an allow list, when there is one, must name the value.
fn allow_deny(
    what: &str,
    value: &str,
    allowed: Option<&[String]>,
    denied: &[String],
    field: &str,
) -> (Verdict, String) {
    if denied.iter().any(|d| d == value) {
        return (Verdict::Refuse, format!("{what} {value} is denied (in denied_{field})"));
    }
    match allowed {
        None => (Verdict::Allow, format!("{value} is not denied and there is no allowed_{field} list")),
        Some(list) if list.iter().any(|a| a == value) => (Verdict::Allow, format!("{value} is in allowed_{field}")),
        Some(_) => (Verdict::Refuse, format!("{what} {value} is not in allowed_{field}")),
    }
}

fn capabilities(policy: &Policy, manifest: &PluginManifest) -> (Verdict, String) {
    let names = |caps: &[Capability]| caps.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
    let requested = if manifest.capabilities.is_empty() { "none".to_string() } else { names(&manifest.capabilities) };
    let Some(allowed) = &policy.allowed_capabilities else {
        return (Verdict::Allow, format!("requested {requested}; no allowed_capabilities list (every capability)"));
    };
    let refused: Vec<Capability> = manifest.capabilities.iter().copied().filter(|c| !allowed.contains(c)).collect();
    if refused.is_empty() {
        (Verdict::Allow, format!("requested {requested}; all in allowed_capabilities"))
    } else {
        let s = if refused.len() == 1 { "y" } else { "ies" };
        (Verdict::Refuse, format!("capabilit{s} {} not in allowed_capabilities", names(&refused)))
    }
}

/// Whether the policy entry `allowed` admits the manifest host `host`: equal (case-insensitive),
/// or a policy host without a port admits that host on any port.
fn host_allowed(allowed: &str, host: &str) -> bool {
    if allowed == ANY_HOST || allowed.eq_ignore_ascii_case(host) {
        return true;
    }
    !allowed.contains(':') && host.rsplit_once(':').is_some_and(|(name, _)| name.eq_ignore_ascii_case(allowed))
}

fn egress(policy: &Policy, manifest: &PluginManifest) -> (Verdict, String, Vec<String>) {
    let hosts = manifest.outbound_hosts();
    if hosts.is_empty() {
        return (Verdict::Allow, "the plugin declares no outbound hosts; no egress".to_string(), Vec::new());
    }
    let (allowed, refused): (Vec<String>, Vec<String>) =
        hosts.iter().cloned().partition(|h| policy.allowed_egress.iter().any(|a| host_allowed(a, h)));
    if !refused.is_empty() {
        let s = if refused.len() == 1 { "" } else { "s" };
        let reason = format!("outbound host{s} {} not in allowed_egress", refused.join(", "));
        return (Verdict::Refuse, reason, allowed);
    }
    let via = if policy.allowed_egress.iter().any(|a| a == ANY_HOST) && !hosts.iter().all(|h| explicitly(policy, h)) {
        "allowed_egress (which contains \"*\")"
    } else {
        "allowed_egress"
    };
    (Verdict::Allow, format!("outbound hosts {} are in {via}", allowed.join(", ")), allowed)
}

fn explicitly(policy: &Policy, host: &str) -> bool {
    policy.allowed_egress.iter().any(|a| a != ANY_HOST && host_allowed(a, host))
}

fn resources(limits: &LimitsPolicy, manifest: &PluginManifest) -> (Verdict, String, Limits) {
    let requested = manifest.resources.clone().unwrap_or_default();
    let mut notes = Vec::new();
    let mut clamped = false;
    let mut pick = |name: &str, request: Option<u64>, default: u64, max: u64| match request {
        None => {
            notes.push(format!("{name} {default} (default)"));
            default
        }
        Some(r) if r > max => {
            clamped = true;
            notes.push(format!("{name} {max} (requested {r}, clamped to limits.max_{name})"));
            max
        }
        Some(r) => {
            notes.push(format!("{name} {r} (requested)"));
            r
        }
    };
    let result = Limits {
        cpu_millicores: pick(
            "cpu_millicores",
            requested.cpu_millicores,
            limits.default_cpu_millicores,
            limits.max_cpu_millicores,
        ),
        memory_mib: pick("memory_mib", requested.memory_mib, limits.default_memory_mib, limits.max_memory_mib),
        pids: pick("pids", requested.pids, limits.default_pids, limits.max_pids),
    };
    let verdict = if clamped { Verdict::Warn } else { Verdict::Allow };
    (verdict, notes.join(", "), result)
}

fn secrets(policy: &Policy, manifest: &PluginManifest) -> (Verdict, String, Vec<String>) {
    // The per-instance runner API key is always mounted; it is not the policy's to grant.
    let wanted: Vec<String> = manifest.secrets.iter().filter(|s| *s != RUNNER_API_KEY_SECRET).cloned().collect();
    if wanted.is_empty() {
        return (
            Verdict::Allow,
            "the plugin reads no secrets besides its runner API key; none other mounted".to_string(),
            Vec::new(),
        );
    }
    let (mounted, withheld): (Vec<String>, Vec<String>) =
        wanted.into_iter().partition(|s| policy.allowed_secrets.contains(s));
    if withheld.is_empty() {
        return (Verdict::Allow, format!("{} mounted (in allowed_secrets)", mounted.join(", ")), mounted);
    }
    let mounted_text = if mounted.is_empty() { "none".to_string() } else { mounted.join(", ") };
    let reason =
        format!("{} not in allowed_secrets and will not be mounted; mounted: {mounted_text}", withheld.join(", "));
    (Verdict::Warn, reason, mounted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIRST: &str = "aisopsflow";

    fn digest() -> Digest {
        Digest::sha256(b"json-transform image")
    }

    fn manifest_json() -> serde_json::Value {
        json!({
            "api_version": "aisopsflow.dev/plugin/v1",
            "name": "json-transform",
            "publisher": FIRST,
            "display_name": "JSON Transform",
            "description": "Transforms JSON.",
            "version": "0.1.0",
            "runtime": { "type": "oci", "image": format!("127.0.0.1:5000/aisopsflow/json-transform@{}", digest()) },
            "entrypoints": {
                "transform": { "path": "/v1/entrypoints/transform", "method": "POST", "timeout_ms": 2000 }
            },
            "compatibility": { "runner_api": "1.0" },
            "capabilities": ["outbound_http", "secrets_read"],
            "network": { "outbound_hosts": ["api.example.com", "hooks.example.org:8443"] },
            "license": "Apache-2.0",
            "resources": { "cpu_millicores": 250, "memory_mib": 64, "pids": 32 },
            "secrets": ["runner_api_key"]
        })
    }

    fn manifest_with(edit: impl FnOnce(&mut serde_json::Value)) -> PluginManifest {
        let mut json = manifest_json();
        edit(&mut json);
        crate::plugin::validate(&json, None).unwrap()
    }

    fn reference() -> ImageReference {
        ImageReference::parse(&format!("127.0.0.1:5000/aisopsflow/json-transform@{}", digest())).unwrap()
    }

    fn permissive() -> Policy {
        Policy::from_toml(
            &format!(
                r#"
                mode = "first-party"
                first_party_publishers = ["{FIRST}"]
                allowed_registries = ["127.0.0.1:5000"]
                allowed_publishers = ["{FIRST}"]
                allowed_plugins = ["{FIRST}/json-transform"]
                approved_digests = ["{}"]
                allowed_capabilities = ["outbound_http", "secrets_read", "filesystem_tmp", "metrics", "callbacks"]
                allowed_egress = ["api.example.com", "hooks.example.org:8443"]
                allowed_secrets = ["runner_api_key"]
                "#,
                digest()
            ),
            "test",
        )
        .unwrap()
    }

    const SIGNED: SignatureState = SignatureState { image: true, manifest: true };

    fn run(policy: &Policy, manifest: &PluginManifest) -> Decision {
        run_with(policy, manifest, &reference(), SIGNED, None)
    }

    fn run_with(
        policy: &Policy,
        manifest: &PluginManifest,
        reference: &ImageReference,
        signatures: SignatureState,
        lifecycle: Option<&Lifecycle>,
    ) -> Decision {
        decide(policy, &Subject { reference, manifest, signatures, lifecycle })
    }

    /// The decision refuses, for `aspect` only, with a reason containing `text`.
    fn assert_refused(decision: &Decision, aspect: &str, text: &str) {
        assert!(!decision.allowed, "{decision}");
        let refused: Vec<_> = decision.refusals().collect();
        assert_eq!(refused.len(), 1, "{decision}");
        assert_eq!(refused[0].aspect, aspect, "{decision}");
        assert!(refused[0].reason.contains(text), "{:?} lacks {text:?}", refused[0].reason);
    }

    #[test]
    fn permissive_policy_allows_and_explains_every_aspect() {
        let d = run(&permissive(), &manifest_with(|_| {}));
        assert!(d.allowed, "{d}");
        let aspects: Vec<_> = d.parts.iter().map(|p| p.aspect).collect();
        assert_eq!(
            aspects,
            [
                "reference",
                "registry",
                "publisher",
                "plugin",
                "approval",
                "signatures",
                "mode",
                "capabilities",
                "egress",
                "resources",
                "secrets",
                "lifecycle"
            ]
        );
        assert!(d.parts.iter().all(|p| p.verdict == Verdict::Allow && !p.reason.is_empty()), "{d}");
        let text = d.to_string();
        assert_eq!(text.lines().count(), 12);
        assert!(text.contains("ALLOW registry: 127.0.0.1:5000 is in allowed_registries"), "{text}");
        assert!(text.contains("ALLOW plugin: aisopsflow/json-transform is in allowed_plugins"), "{text}");
        assert_eq!(d.egress, ["api.example.com", "hooks.example.org:8443"]);
        assert!(d.secrets.is_empty());
        assert_eq!(d.limits, Limits { cpu_millicores: 250, memory_mib: 64, pids: 32 });
    }

    #[test]
    fn refuses_a_mutable_tag() {
        let tagged = ImageReference::parse("127.0.0.1:5000/aisopsflow/json-transform:v1").unwrap();
        let mut policy = permissive();
        policy.require_approval = false;
        let d = run_with(&policy, &manifest_with(|_| {}), &tagged, SIGNED, None);
        assert_refused(&d, "reference", "mutable tag \"v1\" without a digest");
        // With approval required, the missing digest also fails the approval check.
        let d = run_with(&permissive(), &manifest_with(|_| {}), &tagged, SIGNED, None);
        assert_eq!(d.refusals().count(), 2, "{d}");
    }

    #[test]
    fn refuses_unsigned_image_when_signatures_are_required() {
        let m = manifest_with(|_| {});
        let d = run_with(&permissive(), &m, &reference(), SignatureState { image: false, manifest: true }, None);
        assert_refused(&d, "signatures", "image not signed by a trusted key");
        let d = run_with(&permissive(), &m, &reference(), SignatureState { image: true, manifest: false }, None);
        assert_refused(&d, "signatures", "plugin manifest artifact not signed by a trusted key");
        let mut lax = permissive();
        lax.require_signatures = false;
        let d = run_with(&lax, &m, &reference(), SignatureState::default(), None);
        assert!(d.allowed, "{d}");
        assert_eq!(d.part("signatures").map(|p| p.verdict), Some(Verdict::Warn));
    }

    #[test]
    fn refuses_a_registry_not_allowed_or_denied() {
        let other = ImageReference::parse(&format!("ghcr.io/aisopsflow/json-transform@{}", digest())).unwrap();
        let d = run_with(&permissive(), &manifest_with(|_| {}), &other, SIGNED, None);
        assert_refused(&d, "registry", "registry ghcr.io is not in allowed_registries");
        let mut policy = permissive();
        policy.allowed_registries = None;
        policy.denied_registries = vec!["ghcr.io".into()];
        let d = run_with(&policy, &manifest_with(|_| {}), &other, SIGNED, None);
        assert_refused(&d, "registry", "registry ghcr.io is denied (in denied_registries)");
    }

    #[test]
    fn refuses_denied_or_unlisted_publishers_and_plugins() {
        let m = manifest_with(|_| {});
        let mut policy = permissive();
        policy.allowed_publishers = None;
        policy.denied_publishers = vec![FIRST.into()];
        assert_refused(&run(&policy, &m), "publisher", "publisher aisopsflow is denied (in denied_publishers)");

        let mut policy = permissive();
        policy.allowed_publishers = Some(vec!["acme".into()]);
        assert_refused(&run(&policy, &m), "publisher", "publisher aisopsflow is not in allowed_publishers");

        let mut policy = permissive();
        policy.allowed_plugins = None;
        policy.denied_plugins = vec!["aisopsflow/json-transform".into()];
        assert_refused(&run(&policy, &m), "plugin", "plugin aisopsflow/json-transform is denied (in denied_plugins)");

        let mut policy = permissive();
        policy.allowed_plugins = Some(vec!["aisopsflow/other".into()]);
        assert_refused(&run(&policy, &m), "plugin", "plugin aisopsflow/json-transform is not in allowed_plugins");
    }

    #[test]
    fn refuses_what_the_tenant_admin_has_not_approved() {
        let mut policy = permissive();
        policy.approved_digests = vec![Digest::sha256(b"another image").to_string()];
        let d = run(&policy, &manifest_with(|_| {}));
        assert_refused(&d, "approval", &format!("{} is not approved by the tenant admin", digest()));
    }

    #[test]
    fn refuses_a_capability_the_policy_does_not_allow() {
        let mut policy = permissive();
        policy.allowed_capabilities = Some(vec![Capability::OutboundHttp, Capability::Metrics]);
        let d = run(&policy, &manifest_with(|_| {}));
        assert_refused(&d, "capabilities", "capability secrets_read not in allowed_capabilities");
    }

    #[test]
    fn refuses_an_outbound_host_the_policy_does_not_allow() {
        let mut policy = permissive();
        policy.allowed_egress = vec!["api.example.com".into()];
        let d = run(&policy, &manifest_with(|_| {}));
        assert_refused(&d, "egress", "outbound host hooks.example.org:8443 not in allowed_egress");
        assert_eq!(d.egress, ["api.example.com"]);
    }

    #[test]
    fn refuses_third_party_under_first_party_only() {
        let m = manifest_with(|j| {
            j["publisher"] = json!("acme");
            j["runtime"]["image"] = json!(format!("127.0.0.1:5000/acme/json-transform@{}", digest()));
        });
        let mut policy = permissive();
        policy.allowed_publishers = None;
        policy.allowed_plugins = None;
        let d = run(&policy, &m);
        assert_refused(&d, "mode", "publisher \"acme\" is third-party (not in first_party_publishers)");
        policy.mode = Mode::ThirdParty;
        let d = run(&policy, &m);
        assert!(d.allowed, "{d}");
        assert!(d.part("mode").is_some_and(|p| p.reason.contains("third-party")), "{d}");
    }

    #[test]
    fn refuses_insecure_and_removed_and_warns_on_deprecated() {
        let m = manifest_with(|_| {});
        let policy = permissive();
        let insecure = Lifecycle::Insecure { reason: "CVE-2026-0001 in the parser".into() };
        let d = run_with(&policy, &m, &reference(), SIGNED, Some(&insecure));
        assert_refused(&d, "lifecycle", "status is insecure: CVE-2026-0001 in the parser");
        let removed = Lifecycle::Removed { reason: "publisher request".into() };
        let d = run_with(&policy, &m, &reference(), SIGNED, Some(&removed));
        assert_refused(&d, "lifecycle", "status is removed: publisher request");
        let deprecated = Lifecycle::Deprecated { replacement: Some("aisopsflow/json-transform@0.2.0".into()) };
        let d = run_with(&policy, &m, &reference(), SIGNED, Some(&deprecated));
        assert!(d.allowed, "{d}");
        let part = d.part("lifecycle").unwrap();
        assert_eq!(part.verdict, Verdict::Warn);
        assert!(part.reason.contains("aisopsflow/json-transform@0.2.0"));
        assert!(d.to_string().contains("WARN lifecycle: status is deprecated"), "{d}");
    }

    #[test]
    fn clamps_resources_and_applies_defaults() {
        let m = manifest_with(|j| {
            j["resources"] = json!({ "cpu_millicores": 4000, "memory_mib": 100 });
        });
        let d = run(&permissive(), &m);
        assert!(d.allowed, "{d}");
        assert_eq!(d.limits, Limits { cpu_millicores: 1000, memory_mib: 100, pids: 64 });
        let part = d.part("resources").unwrap();
        assert_eq!(part.verdict, Verdict::Warn);
        assert!(part.reason.contains("requested 4000, clamped to limits.max_cpu_millicores"), "{}", part.reason);
        assert!(part.reason.contains("pids 64 (default)"), "{}", part.reason);

        let m = manifest_with(|j| {
            j.as_object_mut().unwrap().remove("resources");
        });
        let d = run(&permissive(), &m);
        assert_eq!(d.limits, Limits { cpu_millicores: 250, memory_mib: 128, pids: 64 });
        assert_eq!(d.part("resources").map(|p| p.verdict), Some(Verdict::Allow));
    }

    #[test]
    fn egress_is_the_intersection_and_star_must_be_explicit() {
        let m = manifest_with(|_| {});
        let mut policy = permissive();
        // A policy host without a port admits that host on any port.
        policy.allowed_egress = vec!["api.example.com".into(), "hooks.example.org".into(), "unused.example".into()];
        let d = run(&policy, &m);
        assert!(d.allowed, "{d}");
        assert_eq!(d.egress, ["api.example.com", "hooks.example.org:8443"]);
        // The default policy allows no egress at all; "*" must be written out.
        policy.allowed_egress = Policy::default().allowed_egress;
        assert_refused(&run(&policy, &m), "egress", "outbound hosts api.example.com, hooks.example.org:8443 not");
        policy.allowed_egress = vec![ANY_HOST.into()];
        let d = run(&policy, &m);
        assert!(d.allowed, "{d}");
        assert_eq!(d.egress, ["api.example.com", "hooks.example.org:8443"]);
        assert!(d.part("egress").is_some_and(|p| p.reason.contains("\"*\"")), "{d}");
        // A port-specific policy entry does not admit another port.
        policy.allowed_egress = vec!["api.example.com".into(), "hooks.example.org:443".into()];
        assert_refused(&run(&policy, &m), "egress", "hooks.example.org:8443");
    }

    #[test]
    fn secrets_scope_is_the_intersection() {
        let m = manifest_with(|j| j["secrets"] = json!(["runner_api_key", "db_password"]));
        let d = run(&permissive(), &m);
        assert!(d.allowed, "{d}");
        assert!(d.secrets.is_empty(), "the runner API key is the runner's, not a policy secret");
        let part = d.part("secrets").unwrap();
        assert_eq!(part.verdict, Verdict::Warn);
        assert!(part.reason.contains("db_password not in allowed_secrets and will not be mounted"), "{}", part.reason);
        let mut policy = permissive();
        policy.allowed_secrets.push("db_password".into());
        assert_eq!(run(&policy, &m).secrets, ["db_password"]);
    }

    #[test]
    fn validation_reports_every_problem_at_once() {
        let e = Policy::from_toml(
            r#"
            mode = "first-party"
            allowed_registries = ["http://registry.example.com"]
            denied_publishers = ["Acme"]
            allowed_plugins = ["acme/tool"]
            denied_plugins = ["acme/tool", "tool"]
            approved_digests = ["sha256:abc"]
            allowed_egress = ["*.example.com", "api.example.com", "api.example.com"]
            allowed_secrets = ["1bad"]
            [limits]
            default_pids = 500
            max_memory_mib = 0
            "#,
            "policy.toml",
        )
        .unwrap_err();
        let PolicyError::Invalid(p) = e else { panic!("{e}") };
        let expect = [
            "first_party_publishers is empty",
            "allowed_registries[0]",
            "denied_publishers[0] = \"Acme\"",
            "denied_plugins[0] = \"acme/tool\" is also in allowed_plugins",
            "denied_plugins[1] = \"tool\"",
            "approved_digests[0]",
            "allowed_egress[0] = \"*.example.com\"",
            "allowed_egress[2] = \"api.example.com\" appears more than once",
            "allowed_secrets[0]",
            "limits.max_memory_mib must be greater than 0",
            "limits.default_memory_mib = 128 exceeds limits.max_memory_mib = 0",
            "limits.default_pids = 500 exceeds limits.max_pids = 256",
        ];
        for want in expect {
            assert!(p.iter().any(|m| m.contains(want)), "no problem mentions {want:?}: {p:#?}");
        }
        assert_eq!(p.len(), expect.len(), "{p:#?}");
    }

    #[test]
    fn unknown_fields_and_values_are_refused() {
        let e = Policy::from_toml("allowed_hosts = []", "p.toml").unwrap_err();
        assert!(e.to_string().contains("allowed_hosts"), "{e}");
        let e = Policy::from_toml("mode = \"anything\"", "p.toml").unwrap_err();
        assert!(e.to_string().contains("anything"), "{e}");
        let e = Policy::from_toml("allowed_capabilities = [\"root\"]", "p.toml").unwrap_err();
        assert!(e.to_string().contains("root"), "{e}");
    }

    #[test]
    fn defaults_are_strict() {
        let p = Policy::default();
        assert_eq!(p.mode, Mode::FirstParty);
        assert!(p.require_signatures && p.require_approval);
        assert!(p.allowed_egress.is_empty() && p.allowed_secrets.is_empty());
        // Valid once first-party publishers are named.
        Policy::from_toml("first_party_publishers = [\"aisopsflow\"]", "p.toml").unwrap();
    }

    #[test]
    fn example_policy_file_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/examples/runner-policy/example.toml");
        let policy = Policy::load(&path).unwrap();
        assert_eq!(policy.api_version, POLICY_API_VERSION);
        assert!(policy.allowed_registries.is_some());
        let e = Policy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(matches!(e, PolicyError::Read { .. }), "{e}");
    }

    #[test]
    fn json_schema_accepts_the_example_and_documents_the_fields() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("runner-policy.v1.schema.json")).unwrap()).unwrap();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let text = std::fs::read_to_string(dir.join("examples/runner-policy/example.toml")).unwrap();
        let example: serde_json::Value = toml::from_str(&text).unwrap();
        let errors: Vec<_> = validator.iter_errors(&example).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let bad: serde_json::Value =
            toml::from_str("mode = \"open\"\nallowed_egress = [\"*.example.com\"]\nextra = 1").unwrap();
        assert_eq!(validator.iter_errors(&bad).count(), 3);
        // Every field of the policy (and of its limits) is documented by the schema.
        let properties = schema["properties"].as_object().unwrap();
        let mut full = serde_json::to_value(Policy::default()).unwrap();
        for (key, value) in full.as_object_mut().unwrap() {
            assert!(properties.contains_key(key), "schema lacks {key}");
            if key == "limits" {
                let limits = properties["limits"]["properties"].as_object().unwrap();
                assert!(value.as_object().unwrap().keys().all(|k| limits.contains_key(k)));
            }
        }
    }
}
