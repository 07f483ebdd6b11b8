//! The conformance report: one [`CaseResult`] per case and entrypoint, and its renderings —
//! a human summary (per-area counts, failures in detail), JSON (serde) and JUnit XML (one
//! `testsuite` per area, a `testcase` per result, a `failure` element with the reason), the
//! format CI systems read.

use super::case::{Area, Expect};
use super::runner::redact_key;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Bodies recorded in a report are cut to this many bytes.
pub const BODY_LIMIT: usize = 2048;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Base URL of the plugin.
    pub target: String,
    /// Plugin name and version from the manifest.
    pub plugin: String,
    pub version: String,
    pub results: Vec<CaseResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case_id: String,
    pub area: Area,
    pub description: String,
    /// The entrypoint the case ran for, when it runs per entrypoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    pub sent: Sent,
    pub expected: Expect,
    /// `None` when nothing came back (connection refused, timeout) or nothing was sent.
    pub received: Option<Received>,
    pub passed: bool,
    /// The case does not apply to this plugin (e.g. it declares no failure example), so it
    /// neither passed nor failed; `reason` says why.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    pub reason: String,
}

impl CaseResult {
    /// `case-id`, or `case-id[entrypoint]` for a per-entrypoint case.
    pub fn name(&self) -> String {
        match &self.entrypoint {
            Some(e) => format!("{}[{e}]", self.case_id),
            None => self.case_id.clone(),
        }
    }
}

/// The request as sent, with the signature value and any form of the key redacted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sent {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Sent {
    pub(crate) fn new(
        method: &reqwest::Method,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
        key: &[u8],
    ) -> Sent {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                // The signature is an HMAC under the key: useless to a reader, and a report is
                // often published (CI artifacts), so it is not repeated there.
                let v = if k.eq_ignore_ascii_case("signature") { "<redacted>".to_string() } else { redact_key(v, key) };
                (k.clone(), v)
            })
            .collect();
        let body = redact_key(&String::from_utf8_lossy(body), key);
        Sent { method: method.to_string(), path: path.to_string(), headers, body: truncate(&body) }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as text, at most [`BODY_LIMIT`] bytes.
    pub body: String,
    pub elapsed_ms: u64,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Truncated, and the key redacted should the plugin have leaked it.
    pub(crate) fn redacted(mut self, key: &[u8]) -> Received {
        self.body = truncate(&redact_key(&self.body, key));
        self
    }
}

/// At most [`BODY_LIMIT`] bytes of `text`, cut at a character boundary, marked when cut.
pub fn truncate(text: &str) -> String {
    if text.len() <= BODY_LIMIT {
        return text.to_string();
    }
    let mut end = BODY_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// Passed and failed counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.failures().count()
    }

    pub fn skipped(&self) -> usize {
        self.results.iter().filter(|r| r.skipped).count()
    }

    pub fn is_success(&self) -> bool {
        self.failures().next().is_none()
    }

    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results.iter().filter(|r| !r.passed && !r.skipped)
    }

    /// Counts for every area (all six, zero when an area ran nothing).
    pub fn by_area(&self) -> BTreeMap<Area, Counts> {
        let mut counts: BTreeMap<Area, Counts> = Area::ALL.iter().map(|a| (*a, Counts::default())).collect();
        for r in &self.results {
            let c = counts.entry(r.area).or_default();
            if r.skipped {
                c.skipped += 1;
            } else if r.passed {
                c.passed += 1;
            } else {
                c.failed += 1;
            }
        }
        counts
    }

    /// The human summary: per-area counts, then each failure with what was sent and received.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "conformance of {} {} at {} (runner API v1)", self.plugin, self.version, self.target);
        for (area, c) in self.by_area() {
            let mark = if c.failed == 0 { "ok  " } else { "FAIL" };
            let skipped = if c.skipped > 0 { format!(", {:>3} skipped", c.skipped) } else { String::new() };
            let _ =
                writeln!(out, "  {mark} {:<14} {:>3} passed, {:>3} failed{skipped}", area.as_str(), c.passed, c.failed);
        }
        for r in self.results.iter().filter(|r| r.skipped) {
            let _ = writeln!(out, "  skipped {} ({}): {}", r.name(), r.area, r.reason);
        }
        for r in self.failures() {
            let _ = writeln!(out, "\nFAILED {} ({}): {}", r.name(), r.area, r.description);
            let _ = writeln!(out, "  reason:   {}", r.reason);
            let _ = writeln!(out, "  sent:     {} {}", r.sent.method, r.sent.path);
            if !r.sent.body.is_empty() {
                let _ = writeln!(out, "            body {}", one_line(&r.sent.body));
            }
            let _ = writeln!(
                out,
                "  expected: status {}{}",
                r.expected.status,
                r.expected.code.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
            );
            match &r.received {
                Some(got) => {
                    let _ = writeln!(
                        out,
                        "  received: status {} after {} ms: {}",
                        got.status,
                        got.elapsed_ms,
                        one_line(&got.body)
                    );
                }
                None => {
                    let _ = writeln!(out, "  received: nothing");
                }
            }
        }
        let _ = writeln!(
            out,
            "\n{} of {} passed{}{}",
            self.passed(),
            self.results.len() - self.skipped(),
            if self.is_success() { String::new() } else { format!(", {} failed", self.failed()) },
            if self.skipped() > 0 { format!(" ({} skipped)", self.skipped()) } else { String::new() }
        );
        out
    }

    /// JUnit XML: a `testsuites` root, one `testsuite` per area (all six), one `testcase` per
    /// result named after the case id (and entrypoint), `failure` carrying the reason.
    pub fn to_junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let total_ms: u64 = self.results.iter().filter_map(|r| r.received.as_ref()).map(|r| r.elapsed_ms).sum();
        let _ = writeln!(
            out,
            "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{}\">",
            xml_escape(&format!("berth conformance: {} {}", self.plugin, self.version)),
            self.results.len(),
            self.failed(),
            seconds(total_ms)
        );
        for (area, counts) in self.by_area() {
            let results: Vec<&CaseResult> = self.results.iter().filter(|r| r.area == area).collect();
            let ms: u64 = results.iter().filter_map(|r| r.received.as_ref()).map(|r| r.elapsed_ms).sum();
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
                area.as_str(),
                results.len(),
                counts.failed,
                counts.skipped,
                seconds(ms)
            );
            for r in results {
                let ms = r.received.as_ref().map_or(0, |got| got.elapsed_ms);
                let _ = write!(
                    out,
                    "    <testcase classname=\"conformance.{}\" name=\"{}\" time=\"{}\"",
                    area.as_str(),
                    xml_escape(&r.name()),
                    seconds(ms)
                );
                if r.skipped {
                    let _ = writeln!(out, ">\n      <skipped message=\"{}\"/>\n    </testcase>", xml_escape(&r.reason));
                    continue;
                }
                if r.passed {
                    out.push_str("/>\n");
                    continue;
                }
                let detail = match &r.received {
                    Some(got) => format!(
                        "{}\nsent: {} {}\nreceived: status {} after {} ms: {}",
                        r.description, r.sent.method, r.sent.path, got.status, got.elapsed_ms, got.body
                    ),
                    None => format!("{}\nsent: {} {}\nreceived: nothing", r.description, r.sent.method, r.sent.path),
                };
                let _ = write!(
                    out,
                    ">\n      <failure type=\"conformance\" message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml_escape(&r.reason),
                    xml_escape(&detail)
                );
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Escapes text for XML attribute values and character data. Characters XML 1.0 cannot hold at
/// all (most C0 controls) become U+FFFD, since a plugin's body may contain anything.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}
