//! The runner API v1 conformance harness: a language-neutral suite of cases, kept as data in
//! `conformance/cases/<area>/*.json` (format: `conformance/case.schema.json`, prose:
//! `conformance/README.md`), run against a plugin listening at a base URL.
//!
//! The contract judged is `schemas/runner-api.v1.openapi.json` (prose: the "Runner API v1"
//! section of `schemas/README.md`). Bodies are validated against its component schemas with
//! `jsonschema`, requests are signed with [`berth_httpsig::Signer`] (RFC 9421 + RFC 9530), so
//! a plugin written in any language is judged by the same requests a runner sends.
//!
//! * [`case`]: the case format, loading (built-in cases are embedded; more come from
//!   directories at run time), validation against the case schema, placeholder expansion.
//! * [`runner`]: sends each case — once per declared entrypoint when it names one — and
//!   judges the answer; returns a [`Report`].
//! * [`report`]: the report types and its three renderings (human summary, JSON, JUnit XML).

pub mod case;
pub mod launch;
pub mod report;
pub mod runner;

pub use case::{
    Area, Case, Deadline, Expect, Placeholders, Request, Signing, Statuses, builtin_cases, load_dir, parse_case, suite,
};
pub use report::{CaseResult, Received, Report, Sent};
pub use runner::{Target, run};

use std::path::PathBuf;

/// Everything that stops the suite from running at all. A plugin that answers wrongly is not
/// an error: it is a failed result in the [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// A case file is not valid JSON or does not match `conformance/case.schema.json`.
    #[error("case {source_name}: {message}")]
    InvalidCase { source_name: String, message: String },
    /// Two cases share an id; reports name cases by id, so ids must be unique.
    #[error("case id {id:?} is defined twice ({first} and {second})")]
    DuplicateId { id: String, first: String, second: String },
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// An embedded schema (case schema or the runner API OpenAPI document) does not compile:
    /// a build defect, which the unit tests catch.
    #[error("embedded schema {name} is unusable: {message}")]
    Schema { name: &'static str, message: String },
    #[error("plugin base URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
    #[error("HTTP client: {0}")]
    Client(String),
}

#[cfg(test)]
mod tests;
