//! RFC 9421 HTTP Message Signatures with `hmac-sha256`, and RFC 9530 `Content-Digest`
//! (`sha-256`), as used by the AisOpsFlow runner API v1.
//!
//! * [`Signer`] signs a request: it returns the `Signature-Input`, `Signature` and (for a
//!   request with a body) `Content-Digest` header values.
//! * [`Verifier`] checks them, including the digest of the body, the `created` / `expires`
//!   window and a bounded replay cache of nonces, and answers a precise [`Error`].
//!
//! Supported derived components: `@method`, `@authority`, `@path`, `@query`; header
//! components are plain (no `sf`, `key`, `bs`, `req` or `tr` parameters).

#[cfg(feature = "plugin")]
pub mod plugin;
mod sf;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use sf::{Item, Member, Params};

type HmacSha256 = Hmac<Sha256>;

/// The algorithm name carried in the `alg` parameter.
pub const ALG: &str = "hmac-sha256";
/// Header names (lowercase) that the runner API uses.
pub const SIGNATURE_INPUT: &str = "signature-input";
pub const SIGNATURE: &str = "signature";
pub const CONTENT_DIGEST: &str = "content-digest";
pub const DEADLINE: &str = "aisopsflow-deadline";
pub const RUNNER_API: &str = "aisopsflow-runner-api";

/// Why a request's signature was refused. Every variant maps to HTTP 401 in the runner API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A required header is absent (`signature-input`, `signature`, or a covered header).
    Missing(String),
    /// A header or parameter could not be parsed or is not acceptable.
    Malformed(String),
    /// `Content-Digest` is absent for a body, unparsable, or does not match the body.
    BadDigest,
    /// The HMAC does not match (wrong key or altered message).
    BadSignature,
    /// `expires` is in the past (or the replay cache can no longer vouch for it).
    Expired,
    /// `created` is further in the future than the allowed clock skew.
    NotYetValid,
    /// The nonce was already seen within its validity window.
    Replayed,
    /// The `keyid` names no key the verifier knows.
    UnknownKey(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Missing(h) => write!(f, "missing {h}"),
            Error::Malformed(m) => write!(f, "malformed signature: {m}"),
            Error::BadDigest => f.write_str("content-digest does not match the body"),
            Error::BadSignature => f.write_str("signature does not verify"),
            Error::Expired => f.write_str("signature expired"),
            Error::NotYetValid => f.write_str("signature created in the future"),
            Error::Replayed => f.write_str("signature nonce replayed"),
            Error::UnknownKey(k) => write!(f, "unknown key id {k:?}"),
        }
    }
}

impl std::error::Error for Error {}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The RFC 9530 `Content-Digest` value for `body`: `sha-256=:<base64>:`.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", sf::B64.encode(Sha256::digest(body)))
}

/// Check a `Content-Digest` header value against `body` (the `sha-256` member must be
/// present and match; other algorithms are ignored).
pub fn verify_content_digest(header: &str, body: &[u8]) -> Result<(), Error> {
    let dict = sf::parse_dictionary(header).map_err(|_| Error::BadDigest)?;
    let want = dict
        .iter()
        .find_map(|(k, m)| match (k.as_str(), m) {
            ("sha-256", Member::Item(Item::Bytes(b), _)) => Some(b.as_slice()),
            _ => None,
        })
        .ok_or(Error::BadDigest)?;
    let got = Sha256::digest(body);
    if ct_eq(want, &got) { Ok(()) } else { Err(Error::BadDigest) }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The parts of an HTTP request that a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Method as sent (`GET`, `POST`).
    pub method: &'a str,
    /// Host and optional port, as in the `Host` header.
    pub authority: &'a str,
    /// The request target: path plus `?query` if any.
    pub target: &'a str,
    /// Header fields (any name case; repeated names allowed).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body (empty when there is none).
    pub body: &'a [u8],
}

impl Message<'_> {
    /// All values of header `name` (case-insensitive), trimmed and joined with ", "
    /// per RFC 9421 §2.1; `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim_matches([' ', '\t']))
            .collect();
        if vals.is_empty() { None } else { Some(vals.join(", ")) }
    }

    fn path(&self) -> &str {
        let p = self.target.split('?').next().unwrap_or("");
        if p.is_empty() { "/" } else { p }
    }

    fn component(&self, name: &str) -> Result<String, Error> {
        let v = match name {
            "@method" => self.method.to_string(),
            "@authority" => self.authority.to_ascii_lowercase(),
            "@path" => self.path().to_string(),
            "@query" => match self.target.split_once('?') {
                Some((_, q)) => format!("?{q}"),
                None => "?".to_string(),
            },
            n if n.starts_with('@') => {
                return Err(Error::Malformed(format!("unsupported derived component {n}")));
            }
            n => {
                if n.bytes().any(|c| c.is_ascii_uppercase()) {
                    return Err(Error::Malformed(format!("component {n} is not lowercase")));
                }
                self.header(n).ok_or_else(|| Error::Missing(n.to_string()))?
            }
        };
        if v.contains(['\r', '\n']) {
            return Err(Error::Malformed(format!("component {name} holds a newline")));
        }
        Ok(v)
    }
}

/// The signature parameters a signer sets, serialized in this order:
/// `created`, `expires`, `nonce`, `keyid`, `alg` (absent ones left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SigParams {
    pub created: Option<u64>,
    pub expires: Option<u64>,
    pub nonce: Option<String>,
    pub keyid: Option<String>,
    pub alg: Option<String>,
}

impl SigParams {
    fn to_sf(&self) -> Params {
        let mut p = Params::new();
        if let Some(c) = self.created {
            p.push(("created".into(), Item::Integer(c as i64)));
        }
        if let Some(e) = self.expires {
            p.push(("expires".into(), Item::Integer(e as i64)));
        }
        if let Some(n) = &self.nonce {
            p.push(("nonce".into(), Item::String(n.clone())));
        }
        if let Some(k) = &self.keyid {
            p.push(("keyid".into(), Item::String(k.clone())));
        }
        if let Some(a) = &self.alg {
            p.push(("alg".into(), Item::String(a.clone())));
        }
        p
    }
}

fn signature_params_value(components: &[&str], params: &Params) -> Result<String, Error> {
    let mut out = String::from("(");
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&sf::ser_string(c).map_err(Error::Malformed)?);
    }
    out.push(')');
    out.push_str(&sf::ser_params(params).map_err(Error::Malformed)?);
    Ok(out)
}

fn base_with(msg: &Message, components: &[&str], params_value: &str) -> Result<String, Error> {
    let mut base = String::new();
    for (i, c) in components.iter().enumerate() {
        if components[..i].contains(c) {
            return Err(Error::Malformed(format!("component {c} listed twice")));
        }
        base.push_str(&sf::ser_string(c).map_err(Error::Malformed)?);
        base.push_str(": ");
        base.push_str(&msg.component(c)?);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(params_value);
    Ok(base)
}

/// The RFC 9421 §2.5 signature base for `msg` over `components` with `params`
/// (one line per component, then `"@signature-params"`, no trailing newline).
pub fn signature_base(msg: &Message, components: &[&str], params: &SigParams) -> Result<String, Error> {
    let pv = signature_params_value(components, &params.to_sf())?;
    base_with(msg, components, &pv)
}

/// `Signature-Input` member value (`(...)` with parameters) for `components` and `params`.
pub fn signature_input_value(components: &[&str], params: &SigParams) -> Result<String, Error> {
    signature_params_value(components, &params.to_sf())
}

/// HMAC-SHA256 of `base` under `key`.
pub fn hmac_sha256(key: &[u8], base: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(base);
    mac.finalize().into_bytes().into()
}

/// The header values a [`Signer`] produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `Signature-Input` header value, e.g. `sig1=("@method" ...);created=...`.
    pub signature_input: String,
    /// `Signature` header value, e.g. `sig1=:<base64>:`.
    pub signature: String,
    /// `Content-Digest` header value when the request has a body.
    pub content_digest: Option<String>,
}

impl SignedHeaders {
    /// The headers to add to the request, as (name, value) pairs.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("Signature-Input", self.signature_input.clone()), ("Signature", self.signature.clone())];
        if let Some(d) = &self.content_digest {
            h.push(("Content-Digest", d.clone()));
        }
        h
    }
}

/// Signs requests the runner-API way: components `@method @path @authority`, then
/// `content-digest` (when there is a body) and the configured headers that are present
/// (default `aisopsflow-deadline`, `aisopsflow-runner-api`), with parameters
/// `created;expires;nonce;keyid;alg`.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    keyid: String,
    label: String,
    validity_secs: u64,
    covered_headers: Vec<String>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("keyid", &self.keyid).field("label", &self.label).finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer with label `sig1` and a 60 s validity window.
    pub fn new(key: impl Into<Vec<u8>>, keyid: impl Into<String>) -> Self {
        Signer {
            key: key.into(),
            keyid: keyid.into(),
            label: "sig1".into(),
            validity_secs: 60,
            covered_headers: vec![DEADLINE.into(), RUNNER_API.into()],
        }
    }

    /// Seconds between `created` and `expires`.
    pub fn with_validity(mut self, secs: u64) -> Self {
        self.validity_secs = secs;
        self
    }

    /// Signature label (dictionary key), default `sig1`.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Header names covered when present (after `content-digest`).
    pub fn with_covered_headers(mut self, names: &[&str]) -> Self {
        self.covered_headers = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        self
    }

    /// Sign now with a fresh random nonce.
    pub fn sign(
        &self,
        method: &str,
        authority: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<SignedHeaders, Error> {
        let nonce = sf::B64.encode(rand::random::<[u8; 18]>()).replace(['+', '/'], "_");
        self.sign_at(method, authority, target, headers, body, unix_now(), &nonce)
    }

    /// Sign with an explicit `created` time and nonce (deterministic; for tests).
    #[allow(clippy::too_many_arguments)]
    pub fn sign_at(
        &self,
        method: &str,
        authority: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        created: u64,
        nonce: &str,
    ) -> Result<SignedHeaders, Error> {
        let digest = (!body.is_empty()).then(|| content_digest(body));
        let mut all: Vec<(&str, &str)> =
            headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(CONTENT_DIGEST)).copied().collect();
        let mut components: Vec<&str> = vec!["@method", "@path", "@authority"];
        if let Some(d) = &digest {
            all.push((CONTENT_DIGEST, d));
            components.push(CONTENT_DIGEST);
        }
        for h in &self.covered_headers {
            if h != CONTENT_DIGEST && all.iter().any(|(k, _)| k.eq_ignore_ascii_case(h)) {
                components.push(h);
            }
        }
        let msg = Message { method, authority, target, headers: &all, body };
        let params = SigParams {
            created: Some(created),
            expires: Some(created + self.validity_secs),
            nonce: Some(nonce.to_string()),
            keyid: Some(self.keyid.clone()),
            alg: Some(ALG.into()),
        };
        let pv = signature_params_value(&components, &params.to_sf())?;
        let base = base_with(&msg, &components, &pv)?;
        let sig = hmac_sha256(&self.key, base.as_bytes());
        Ok(SignedHeaders {
            signature_input: format!("{}={pv}", self.label),
            signature: format!("{}=:{}:", self.label, sf::B64.encode(sig)),
            content_digest: digest,
        })
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub label: String,
    pub keyid: Option<String>,
    pub created: u64,
    pub expires: u64,
    pub nonce: String,
    pub components: Vec<String>,
}

enum Keys {
    /// One shared key, whatever `keyid` the signer names.
    Any(Vec<u8>),
    ById(HashMap<String, Vec<u8>>),
}

/// Nonces seen, kept until their signature expires; at most `capacity` entries.
/// When full, the entry expiring first is dropped and its expiry becomes a watermark:
/// signatures expiring at or before it are refused ([`Error::Expired`]), since their
/// nonce can no longer be vouched for. Memory stays bounded; replays stay impossible.
struct ReplayCache {
    capacity: usize,
    seen: HashMap<(String, String), u64>,
    by_expiry: BTreeSet<(u64, String, String)>,
    watermark: u64,
}

impl ReplayCache {
    fn check_and_insert(&mut self, keyid: &str, nonce: &str, expires: u64, now: u64) -> Result<(), Error> {
        // Drop what expired.
        while let Some(first) = self.by_expiry.first().cloned() {
            if first.0 >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&(first.1, first.2));
        }
        if expires <= self.watermark {
            return Err(Error::Expired);
        }
        let key = (keyid.to_string(), nonce.to_string());
        if self.seen.contains_key(&key) {
            return Err(Error::Replayed);
        }
        while self.seen.len() >= self.capacity.max(1) {
            let Some(first) = self.by_expiry.pop_first() else {
                break;
            };
            self.watermark = self.watermark.max(first.0);
            self.seen.remove(&(first.1, first.2));
        }
        if expires <= self.watermark {
            return Err(Error::Expired);
        }
        self.by_expiry.insert((expires, key.0.clone(), key.1.clone()));
        self.seen.insert(key, expires);
        Ok(())
    }
}

/// Verifies runner-API request signatures. Thread-safe (`&self`).
pub struct Verifier {
    keys: Keys,
    max_skew_secs: u64,
    max_validity_secs: u64,
    required: Vec<String>,
    required_if_present: Vec<String>,
    replay: Mutex<ReplayCache>,
}

impl Verifier {
    /// Verify with one shared key, whatever `keyid` the signer names.
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self::with_keys_inner(Keys::Any(key.into()))
    }

    /// Verify with keys looked up by `keyid` ([`Error::UnknownKey`] otherwise).
    pub fn with_keys<I, K, V>(keys: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<Vec<u8>>,
    {
        Self::with_keys_inner(Keys::ById(keys.into_iter().map(|(k, v)| (k.into(), v.into())).collect()))
    }

    fn with_keys_inner(keys: Keys) -> Self {
        Verifier {
            keys,
            max_skew_secs: 60,
            max_validity_secs: 300,
            required: vec!["@method".into(), "@path".into(), "@authority".into()],
            required_if_present: vec![CONTENT_DIGEST.into(), DEADLINE.into(), RUNNER_API.into()],
            replay: Mutex::new(ReplayCache {
                capacity: 100_000,
                seen: HashMap::new(),
                by_expiry: BTreeSet::new(),
                watermark: 0,
            }),
        }
    }

    /// Maximum number of remembered nonces (default 100 000).
    pub fn with_replay_capacity(self, n: usize) -> Self {
        self.replay.lock().unwrap_or_else(|e| e.into_inner()).capacity = n;
        self
    }

    /// How far in the future `created` may be (default 60 s).
    pub fn with_max_skew(mut self, secs: u64) -> Self {
        self.max_skew_secs = secs;
        self
    }

    /// Longest accepted `expires - created` (default 300 s); bounds the replay window.
    pub fn with_max_validity(mut self, secs: u64) -> Self {
        self.max_validity_secs = secs;
        self
    }

    /// Verify `msg` at the current time.
    pub fn verify(&self, msg: &Message) -> Result<Verified, Error> {
        self.verify_at(msg, unix_now())
    }

    /// Verify `msg` as if the time were `now` (Unix seconds).
    pub fn verify_at(&self, msg: &Message, now: u64) -> Result<Verified, Error> {
        let input = msg.header(SIGNATURE_INPUT).ok_or_else(|| Error::Missing(SIGNATURE_INPUT.into()))?;
        let sig = msg.header(SIGNATURE).ok_or_else(|| Error::Missing(SIGNATURE.into()))?;
        let input = sf::parse_dictionary(&input).map_err(|e| Error::Malformed(format!("signature-input: {e}")))?;
        let sigs = sf::parse_dictionary(&sig).map_err(|e| Error::Malformed(format!("signature: {e}")))?;

        // First label present in both headers.
        let (label, member, sig_bytes) = input
            .iter()
            .find_map(|(label, m)| sigs.iter().find(|(l, _)| l == label).map(|(_, s)| (label, m, s)))
            .ok_or_else(|| Error::Malformed("no signature label matches signature-input".into()))?;
        let Member::Item(Item::Bytes(sig_bytes), _) = sig_bytes else {
            return Err(Error::Malformed("signature is not a byte sequence".into()));
        };
        let Member::Inner(items, params) = member else {
            return Err(Error::Malformed("signature-input is not an inner list".into()));
        };
        let mut components: Vec<&str> = Vec::with_capacity(items.len());
        for (it, p) in items {
            match it {
                Item::String(s) if p.is_empty() => components.push(s),
                Item::String(_) => {
                    return Err(Error::Malformed("component parameters unsupported".into()));
                }
                _ => return Err(Error::Malformed("component is not a string".into())),
            }
        }
        for r in &self.required {
            if !components.contains(&r.as_str()) {
                return Err(Error::Malformed(format!("{r} not covered")));
            }
        }
        for r in &self.required_if_present {
            if msg.header(r).is_some() && !components.contains(&r.as_str()) {
                return Err(Error::Malformed(format!("{r} present but not covered")));
            }
        }

        let int = |name: &str| -> Result<Option<u64>, Error> {
            match params.iter().find(|(k, _)| k == name) {
                None => Ok(None),
                Some((_, Item::Integer(i))) if *i >= 0 => Ok(Some(*i as u64)),
                Some(_) => Err(Error::Malformed(format!("{name} is not a non-negative integer"))),
            }
        };
        let string = |name: &str| -> Result<Option<String>, Error> {
            match params.iter().find(|(k, _)| k == name) {
                None => Ok(None),
                Some((_, Item::String(s))) => Ok(Some(s.clone())),
                Some(_) => Err(Error::Malformed(format!("{name} is not a string"))),
            }
        };
        let created = int("created")?.ok_or_else(|| Error::Malformed("created required".into()))?;
        let expires = int("expires")?.unwrap_or(created + self.max_validity_secs);
        let nonce = string("nonce")?.ok_or_else(|| Error::Malformed("nonce required".into()))?;
        let keyid = string("keyid")?;
        if let Some(alg) = string("alg")?
            && alg != ALG
        {
            return Err(Error::Malformed(format!("unsupported alg {alg:?}")));
        }
        if expires < created || expires - created > self.max_validity_secs {
            return Err(Error::Malformed("validity window too long or negative".into()));
        }

        let key: &[u8] = match &self.keys {
            Keys::Any(k) => k,
            Keys::ById(map) => {
                let id = keyid.as_deref().unwrap_or("");
                map.get(id).ok_or_else(|| Error::UnknownKey(id.to_string()))?
            }
        };

        if created > now + self.max_skew_secs {
            return Err(Error::NotYetValid);
        }
        if now > expires {
            return Err(Error::Expired);
        }

        let pv = signature_params_value(&components, params)?;
        let base = base_with(msg, &components, &pv)?;
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
        mac.update(base.as_bytes());
        mac.verify_slice(sig_bytes).map_err(|_| Error::BadSignature)?;

        match msg.header(CONTENT_DIGEST) {
            Some(d) => verify_content_digest(&d, msg.body)?,
            None if !msg.body.is_empty() => return Err(Error::BadDigest),
            None => {}
        }

        self.replay.lock().unwrap_or_else(|e| e.into_inner()).check_and_insert(
            keyid.as_deref().unwrap_or(""),
            &nonce,
            expires,
            now,
        )?;

        Ok(Verified {
            label: label.clone(),
            keyid,
            created,
            expires,
            nonce,
            components: components.iter().map(|c| c.to_string()).collect(),
        })
    }
}

#[cfg(test)]
mod tests;
