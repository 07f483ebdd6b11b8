//! Version ordering per package ecosystem, and the OSV range evaluation built on it.
//!
//! Owns: parsing and comparing versions of the ecosystems berth scans (crates.io, npm,
//! PyPI, Go), and deciding whether a version falls in one OSV `affected[].ranges[]` entry.
//! Does not own: reading OSV records or package URLs (that is [`super::vulndb`]).
//!
//! Specs followed:
//! - OSV schema 1.6, § Evaluation (<https://ossf.github.io/osv-schema/#evaluation>): events
//!   sorted by version, `introduced: "0"` before everything, `fixed` exclusive,
//!   `last_affected` inclusive, `limit` (with `"*"` meaning no limit) bounding the range.
//! - SemVer 2.0 for crates.io and npm (npm versions may carry a leading `v` or `=`); build
//!   metadata takes no part in the order.
//! - Go module versions: SemVer with a `v` prefix (OSV's Go ranges omit it, so both are
//!   accepted); pseudo-versions order as the SemVer pre-releases they are; `+incompatible`
//!   is build metadata and ignored.
//! - PEP 440 for PyPI (<https://peps.python.org/pep-0440/>): epochs, release segments with
//!   insignificant trailing zeros, pre-, post- and dev-releases in all their spellings, local
//!   versions, case and separator normalization.

use std::cmp::Ordering;

/// The package ecosystems whose versions berth can order (OSV ecosystem names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ecosystem {
    CratesIo,
    Npm,
    PyPI,
    Go,
}

impl Ecosystem {
    /// The ecosystem an OSV `affected[].package.ecosystem` names (`crates.io`, `npm`, `PyPI`,
    /// `Go`); `None` for any other.
    pub fn from_osv(name: &str) -> Option<Ecosystem> {
        match name {
            "crates.io" => Some(Ecosystem::CratesIo),
            "npm" => Some(Ecosystem::Npm),
            "PyPI" => Some(Ecosystem::PyPI),
            "Go" => Some(Ecosystem::Go),
            _ => None,
        }
    }

    /// The ecosystem of a package URL type (`cargo`, `npm`, `pypi`, `golang`; the purl spec
    /// makes types case-insensitive).
    pub fn from_purl_type(t: &str) -> Option<Ecosystem> {
        match t.to_ascii_lowercase().as_str() {
            "cargo" => Some(Ecosystem::CratesIo),
            "npm" => Some(Ecosystem::Npm),
            "pypi" => Some(Ecosystem::PyPI),
            "golang" => Some(Ecosystem::Go),
            _ => None,
        }
    }

    /// The OSV ecosystem name.
    pub fn as_osv(self) -> &'static str {
        match self {
            Ecosystem::CratesIo => "crates.io",
            Ecosystem::Npm => "npm",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::Go => "Go",
        }
    }
}

/// One event of an OSV range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

/// Orders two versions of `eco`; `None` when either does not parse.
pub fn compare(eco: Ecosystem, a: &str, b: &str) -> Option<Ordering> {
    Some(Parsed::new(eco, a)?.cmp(&Parsed::new(eco, b)?))
}

/// Whether `version` falls in the OSV range made of `events` (one `ranges[]` entry of type
/// `SEMVER` or `ECOSYSTEM`), per the schema's evaluation algorithm.
///
/// A version that does not parse is never affected. Event versions that do not parse are
/// treated so that a bad advisory errs towards reporting rather than hiding: an unparseable
/// `introduced` counts as `"0"`, an unparseable `fixed`, `last_affected` or `limit` is ignored.
pub fn affected(eco: Ecosystem, version: &str, events: &[Event]) -> bool {
    let Some(v) = Parsed::new(eco, version) else {
        return false;
    };

    // BeforeLimits: with no (usable) limit events the implicit limit is "*".
    let limits: Vec<Bound> = events
        .iter()
        .filter_map(|e| match e {
            Event::Limit(s) => Bound::new(eco, s, false),
            _ => None,
        })
        .collect();
    if !limits.is_empty() && !limits.iter().any(|l| l.above(&v)) {
        return false;
    }

    let mut sorted: Vec<(Bound, &Event)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Introduced(s) => Some((Bound::new(eco, s, true).unwrap_or(Bound::Min), e)),
            Event::Fixed(s) | Event::LastAffected(s) => Some((Bound::new(eco, s, false)?, e)),
            Event::Limit(_) => None,
        })
        .collect();
    // Stable: events at the same version keep the advisory's order.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));

    let mut vulnerable = false;
    for (bound, event) in &sorted {
        match event {
            Event::Introduced(_) if !bound.above(&v) => vulnerable = true,
            Event::Fixed(_) if !bound.above(&v) => vulnerable = false,
            Event::LastAffected(_) if bound.below(&v) => vulnerable = false,
            _ => {}
        }
    }
    vulnerable
}

/// An event version: `"0"` (for `introduced`) is below everything, a limit containing `*`
/// above everything.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Bound {
    Min,
    At(Parsed),
    Max,
}

impl Bound {
    fn new(eco: Ecosystem, s: &str, introduced: bool) -> Option<Bound> {
        let s = s.trim();
        if introduced && s == "0" {
            return Some(Bound::Min);
        }
        if !introduced && s.contains('*') {
            return Some(Bound::Max);
        }
        Parsed::new(eco, s).map(Bound::At)
    }

    /// `v < self`.
    fn above(&self, v: &Parsed) -> bool {
        match self {
            Bound::Min => false,
            Bound::At(b) => v < b,
            Bound::Max => true,
        }
    }

    /// `self < v`.
    fn below(&self, v: &Parsed) -> bool {
        match self {
            Bound::Min => true,
            Bound::At(b) => b < v,
            Bound::Max => false,
        }
    }
}

/// A parsed version; only versions of the same ecosystem are ever compared.
#[derive(Debug, Clone)]
enum Parsed {
    Sem(semver::Version),
    Pep(Pep440),
}

impl Parsed {
    fn new(eco: Ecosystem, s: &str) -> Option<Parsed> {
        let s = s.trim();
        match eco {
            Ecosystem::CratesIo => semver::Version::parse(s).ok().map(Parsed::Sem),
            Ecosystem::Npm => {
                let s = s.strip_prefix('=').unwrap_or(s).trim_start();
                let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
                semver::Version::parse(s).ok().map(Parsed::Sem)
            }
            Ecosystem::Go => {
                let s = s.strip_prefix('v').unwrap_or(s);
                semver::Version::parse(s).ok().map(Parsed::Sem)
            }
            Ecosystem::PyPI => Pep440::parse(s).map(Parsed::Pep),
        }
    }
}

impl Ord for Parsed {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            // SemVer precedence: build metadata (Go's `+incompatible` too) does not count.
            (Parsed::Sem(a), Parsed::Sem(b)) => a.cmp_precedence(b),
            (Parsed::Pep(a), Parsed::Pep(b)) => a.cmp(b),
            // Never happens: both sides are parsed with the same ecosystem.
            (Parsed::Sem(_), Parsed::Pep(_)) => Ordering::Less,
            (Parsed::Pep(_), Parsed::Sem(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Parsed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Parsed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Parsed {}

/// A PEP 440 version, normalized.
#[derive(Debug, Clone)]
struct Pep440 {
    epoch: u64,
    /// Trailing zeros removed: `1.0` and `1` are the same release.
    release: Vec<u64>,
    /// (0 = a, 1 = b, 2 = rc, number).
    pre: Option<(u8, u64)>,
    post: Option<u64>,
    dev: Option<u64>,
    local: Vec<LocalPart>,
}

/// A local version segment: numbers sort above strings, numbers numerically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LocalPart {
    Str(String),
    Num(u64),
}

/// A sort key component with infinities, as `packaging` builds it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Inf<T> {
    Neg,
    Val(T),
    Pos,
}

impl Pep440 {
    fn parse(s: &str) -> Option<Pep440> {
        let s = s.trim().to_ascii_lowercase();
        let (public, local) = match s.split_once('+') {
            Some((p, l)) => (p, Some(l)),
            None => (s.as_str(), None),
        };
        let mut c = Cursor { s: public.as_bytes(), i: 0 };
        c.eat(b'v');

        let mut epoch = 0;
        if let Some(bang) = public.find('!') {
            epoch = c.number()?;
            if c.i != bang {
                return None;
            }
            c.i += 1;
        }

        let mut release = vec![c.number()?];
        while c.peek() == Some(b'.') && c.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
            c.i += 1;
            release.push(c.number()?);
        }
        while release.len() > 1 && release.last() == Some(&0) {
            release.pop();
        }

        let pre = c.try_parse(|c| {
            c.separator();
            let kind = match c.word().as_str() {
                "a" | "alpha" => 0,
                "b" | "beta" => 1,
                "rc" | "c" | "pre" | "preview" => 2,
                _ => return None,
            };
            c.separator();
            Some((kind, c.number().unwrap_or(0)))
        });

        // `1.0-1`: the implicit post-release form needs its dash.
        let post = c.try_parse(|c| if c.eat(b'-') { c.number() } else { None }).or_else(|| {
            c.try_parse(|c| {
                c.separator();
                if !matches!(c.word().as_str(), "post" | "rev" | "r") {
                    return None;
                }
                c.separator();
                Some(c.number().unwrap_or(0))
            })
        });
        let dev = c.try_parse(|c| {
            c.separator();
            if c.word() != "dev" {
                return None;
            }
            c.separator();
            Some(c.number().unwrap_or(0))
        });

        if c.i != c.s.len() {
            return None;
        }

        let local = match local {
            None => Vec::new(),
            Some(l) => {
                let mut parts = Vec::new();
                for part in l.split(['.', '-', '_']) {
                    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        return None;
                    }
                    parts.push(if part.bytes().all(|b| b.is_ascii_digit()) {
                        LocalPart::Num(part.parse().ok()?)
                    } else {
                        LocalPart::Str(part.to_string())
                    });
                }
                parts
            }
        };

        Some(Pep440 { epoch, release, pre, post, dev, local })
    }

    /// The sort key of `packaging.version._cmpkey`.
    #[allow(clippy::type_complexity)]
    fn key(&self) -> (u64, &[u64], Inf<(u8, u64)>, Inf<u64>, Inf<u64>, Inf<&[LocalPart]>) {
        // A dev release of a final version sorts before its pre-releases: 1.0.dev1 < 1.0a1.
        let pre = match (self.pre, self.post, self.dev) {
            (None, None, Some(_)) => Inf::Neg,
            (None, _, _) => Inf::Pos,
            (Some(p), _, _) => Inf::Val(p),
        };
        let post = self.post.map_or(Inf::Neg, Inf::Val);
        let dev = self.dev.map_or(Inf::Pos, Inf::Val);
        let local = if self.local.is_empty() { Inf::Neg } else { Inf::Val(self.local.as_slice()) };
        (self.epoch, self.release.as_slice(), pre, post, dev, local)
    }
}

impl Ord for Pep440 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Pep440 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pep440 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pep440 {}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.s.get(self.i + n).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.i += 1;
        }
        hit
    }

    /// One optional `.`, `-` or `_`.
    fn separator(&mut self) {
        if matches!(self.peek(), Some(b'.' | b'-' | b'_')) {
            self.i += 1;
        }
    }

    fn number(&mut self) -> Option<u64> {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        if start == self.i {
            return None;
        }
        std::str::from_utf8(&self.s[start..self.i]).ok()?.parse().ok()
    }

    fn word(&mut self) -> String {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_lowercase()) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// Runs `f`; on `None` rewinds to where it started.
    fn try_parse<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let start = self.i;
        let r = f(self);
        if r.is_none() {
            self.i = start;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ecosystem::*;
    use Ordering::*;

    fn check_order(eco: Ecosystem, ascending: &[&str]) {
        for (i, a) in ascending.iter().enumerate() {
            for (j, b) in ascending.iter().enumerate() {
                assert_eq!(compare(eco, a, b), Some(i.cmp(&j)), "{eco:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn ecosystem_names_round_trip() {
        for eco in [CratesIo, Npm, PyPI, Go] {
            assert_eq!(Ecosystem::from_osv(eco.as_osv()), Some(eco));
        }
        assert_eq!(Ecosystem::from_purl_type("cargo"), Some(CratesIo));
        assert_eq!(Ecosystem::from_purl_type("npm"), Some(Npm));
        assert_eq!(Ecosystem::from_purl_type("PyPI"), Some(PyPI));
        assert_eq!(Ecosystem::from_purl_type("golang"), Some(Go));
        assert_eq!(Ecosystem::from_purl_type("maven"), None);
        assert_eq!(Ecosystem::from_osv("pypi"), None);
        assert_eq!(Ecosystem::from_osv("Debian:12"), None);
    }

    #[test]
    fn semver_orders_prereleases_per_spec() {
        // The example of SemVer 2.0 § 11.
        check_order(
            CratesIo,
            &[
                "1.0.0-alpha",
                "1.0.0-alpha.1",
                "1.0.0-alpha.beta",
                "1.0.0-beta",
                "1.0.0-beta.2",
                "1.0.0-beta.11",
                "1.0.0-rc.1",
                "1.0.0",
                "1.0.1",
                "1.1.0",
                "1.10.0",
                "2.0.0",
            ],
        );
        check_order(CratesIo, &["0.0.0-0", "0.0.0", "0.0.1", "0.1.0"]);
    }

    #[test]
    fn semver_ignores_build_metadata() {
        assert_eq!(compare(CratesIo, "1.0.0+build.1", "1.0.0+build.2"), Some(Equal));
        assert_eq!(compare(CratesIo, "1.0.0+zzz", "1.0.1"), Some(Less));
    }

    #[test]
    fn semver_rejects_what_is_not_semver() {
        for bad in ["1.0", "1", "v1.0.0", "01.0.0", "1.0.0-", "latest", ""] {
            assert_eq!(compare(CratesIo, bad, "1.0.0"), None, "{bad}");
        }
    }

    #[test]
    fn npm_accepts_v_and_equals_prefixes() {
        assert_eq!(compare(Npm, "v1.2.3", "1.2.3"), Some(Equal));
        assert_eq!(compare(Npm, "=1.2.3", "1.2.3"), Some(Equal));
        assert_eq!(compare(Npm, "=v1.2.3", "1.2.4"), Some(Less));
        assert_eq!(compare(Npm, " 1.2.3 ", "1.2.3"), Some(Equal));
        check_order(Npm, &["7.22.20", "7.23.0", "7.23.2", "8.0.0-alpha.0", "8.0.0-alpha.3", "8.0.0-alpha.4", "8.0.0"]);
        assert_eq!(compare(Npm, "^1.2.3", "1.2.3"), None);
    }

    #[test]
    fn go_accepts_both_prefix_forms_and_orders_pseudo_versions() {
        assert_eq!(compare(Go, "v0.17.0", "0.17.0"), Some(Equal));
        assert_eq!(compare(Go, "v2.0.0+incompatible", "2.0.0"), Some(Equal));
        check_order(
            Go,
            &[
                "v0.0.0-20190308221718-c2843e01d9a2",
                "v0.0.0-20231010170000-aaaaaaaaaaaa",
                "v0.0.1",
                "v0.16.0",
                // A pseudo-version after v0.16.0, before v0.16.1.
                "v0.16.1-0.20231011000000-bbbbbbbbbbbb",
                "v0.16.1",
                "v0.17.0-rc.1",
                "v0.17.0-rc.1.0.20231012000000-cccccccccccc",
                "v0.17.0",
                "v1.0.0",
                "v2.0.0+incompatible",
            ],
        );
        assert_eq!(compare(Go, "v1.2", "v1.2.0"), None);
    }

    #[test]
    fn pep440_spec_ordering_example() {
        // PEP 440 § Summary of permitted suffixes and relative ordering.
        check_order(
            PyPI,
            &[
                "1.dev0",
                "1.0.dev456",
                "1.0a1",
                "1.0a2.dev456",
                "1.0a12.dev456",
                "1.0a12",
                "1.0b1.dev456",
                "1.0b2",
                "1.0b2.post345.dev456",
                "1.0b2.post345",
                "1.0rc1.dev456",
                "1.0rc1",
                "1.0",
                "1.0+abc.5",
                "1.0+abc.7",
                "1.0+5",
                "1.0.post456.dev34",
                "1.0.post456",
                "1.0.15",
                "1.1.dev1",
            ],
        );
    }

    #[test]
    fn pep440_brief_ordering() {
        check_order(PyPI, &["1.0.dev1", "1.0a1", "1.0a1.post1", "1.0", "1.0.post1"]);
        check_order(PyPI, &["0.9", "1.0", "1.0.1", "1.1", "1.10", "2", "1!0.1"]);
    }

    #[test]
    fn pep440_normalizes_spellings() {
        let same = [
            ("1.0", "1"),
            ("1.0.0.0", "1"),
            ("V1.0", "1.0"),
            ("v1.0", "1.0"),
            ("1.0ALPHA1", "1.0a1"),
            ("1.0-alpha-1", "1.0a1"),
            ("1.0.alpha.1", "1.0a1"),
            ("1.0_a_1", "1.0a1"),
            ("1.0beta2", "1.0b2"),
            ("1.0c1", "1.0rc1"),
            ("1.0pre1", "1.0rc1"),
            ("1.0preview1", "1.0rc1"),
            ("1.0a", "1.0a0"),
            ("1.0-1", "1.0.post1"),
            ("1.0-post1", "1.0.post1"),
            ("1.0_post_1", "1.0.post1"),
            ("1.0rev1", "1.0.post1"),
            ("1.0r1", "1.0.post1"),
            ("1.0.post", "1.0.post0"),
            ("1.0-dev1", "1.0.dev1"),
            ("1.0dev", "1.0.dev0"),
            ("1.0+ubuntu-1", "1.0+ubuntu.1"),
            ("1.0+UBUNTU_1", "1.0+ubuntu.1"),
            ("0!1.0", "1.0"),
            ("  1.0  ", "1.0"),
            ("01.002", "1.2"),
        ];
        for (a, b) in same {
            assert_eq!(compare(PyPI, a, b), Some(Equal), "{a} == {b}");
        }
    }

    #[test]
    fn pep440_local_versions_sort_after_public_and_by_segment() {
        check_order(PyPI, &["1.0", "1.0+a", "1.0+a.b", "1.0+a.1", "1.0+b", "1.0+1", "1.0+1.a", "1.0+2", "1.0+10"]);
    }

    #[test]
    fn pep440_epochs_dominate() {
        check_order(PyPI, &["2024.1", "1!0.1", "1!1.0", "2!0.0.1"]);
    }

    #[test]
    fn pep440_rejects_garbage() {
        for bad in ["", "abc", "1.0+", "1.0+a..b", "1.0.x", "1.0a1b1", "1.0-", "!1.0", "1..0", "1.0 beta", "1.0+a+b"] {
            assert_eq!(compare(PyPI, bad, "1.0"), None, "{bad}");
        }
    }

    fn ev(events: &[(&str, &str)]) -> Vec<Event> {
        events
            .iter()
            .map(|(k, v)| match *k {
                "introduced" => Event::Introduced(v.to_string()),
                "fixed" => Event::Fixed(v.to_string()),
                "last_affected" => Event::LastAffected(v.to_string()),
                "limit" => Event::Limit(v.to_string()),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn range_introduced_zero_affects_everything() {
        let e = ev(&[("introduced", "0")]);
        for v in ["0.0.0-0", "0.0.1", "99.0.0"] {
            assert!(affected(CratesIo, v, &e), "{v}");
        }
    }

    #[test]
    fn range_fixed_is_exclusive_and_introduced_inclusive() {
        let e = ev(&[("introduced", "1.0.0"), ("fixed", "1.2.0")]);
        assert!(!affected(Npm, "0.9.9", &e));
        assert!(affected(Npm, "1.0.0", &e));
        assert!(affected(Npm, "1.1.9", &e));
        assert!(affected(Npm, "1.2.0-rc.1", &e));
        assert!(!affected(Npm, "1.2.0", &e));
        assert!(!affected(Npm, "2.0.0", &e));
    }

    #[test]
    fn range_last_affected_is_inclusive() {
        let e = ev(&[("introduced", "0"), ("last_affected", "4.0.0")]);
        assert!(affected(PyPI, "3.0.10", &e));
        assert!(affected(PyPI, "4.0", &e));
        // A local version sorts after its public one, so it is past `last_affected`.
        assert!(!affected(PyPI, "4.0.0+local", &e));
        assert!(!affected(PyPI, "4.0.0.post1", &e));
        assert!(!affected(PyPI, "4.0.1", &e));
    }

    #[test]
    fn range_events_are_sorted_before_evaluation() {
        // Two intervals, written out of order: [0.6.3, 0.6.14) and [1.0.0, 1.6.1).
        let e = ev(&[("fixed", "1.6.1"), ("introduced", "1.0.0"), ("fixed", "0.6.14"), ("introduced", "0.6.3")]);
        let cases = [
            ("0.6.2", false),
            ("0.6.3", true),
            ("0.6.13", true),
            ("0.6.14", false),
            ("0.9.0", false),
            ("1.0.0", true),
            ("1.6.0", true),
            ("1.6.1", false),
            ("1.13.0", false),
        ];
        for (v, want) in cases {
            assert_eq!(affected(CratesIo, v, &e), want, "{v}");
        }
    }

    #[test]
    fn range_limit_bounds_the_range() {
        let e = ev(&[("introduced", "0"), ("limit", "2.0.0")]);
        assert!(affected(Go, "v1.9.9", &e));
        assert!(!affected(Go, "v2.0.0", &e));
        let star = ev(&[("introduced", "1.0.0"), ("limit", "*")]);
        assert!(affected(Go, "v5.0.0", &star));
        assert!(!affected(Go, "v0.9.0", &star));
    }

    #[test]
    fn range_go_accepts_osv_versions_without_v() {
        let e = ev(&[("introduced", "0"), ("fixed", "0.17.0")]);
        assert!(affected(Go, "v0.16.0", &e));
        assert!(affected(Go, "v0.0.0-20230101000000-abcdefabcdef", &e));
        assert!(!affected(Go, "v0.17.0", &e));
        assert!(!affected(Go, "0.17.0", &e));
    }

    #[test]
    fn range_with_unparseable_versions_errs_towards_affected() {
        assert!(!affected(CratesIo, "not-a-version", &ev(&[("introduced", "0")])));
        // A bad `introduced` counts as "0"; a bad `fixed` is ignored.
        assert!(affected(CratesIo, "0.1.0", &ev(&[("introduced", "1.x"), ("fixed", "2.0.0")])));
        assert!(affected(CratesIo, "3.0.0", &ev(&[("introduced", "1.0.0"), ("fixed", "2.x")])));
    }

    #[test]
    fn range_pypi_ecosystem_ordering() {
        let e = ev(&[("introduced", "2.3.0"), ("fixed", "2.31.0")]);
        assert!(!affected(PyPI, "2.2", &e));
        assert!(affected(PyPI, "2.3", &e));
        assert!(affected(PyPI, "2.31.0rc1", &e));
        assert!(affected(PyPI, "2.31.0.dev1", &e));
        assert!(!affected(PyPI, "2.31", &e));
        assert!(!affected(PyPI, "2.31.0.post1", &e));
    }
}
