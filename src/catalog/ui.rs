//! The catalog's web UI inside `berth serve` (issue 8): a search page with facets and
//! result cards, and one page per plugin. Server-rendered HTML, one small stylesheet built
//! into the binary and no script at all, so it works with no network beyond berth itself
//! (and with scripting off).
//!
//! - `GET /` takes the query parameters of `/api/v1/search` ([`SearchParams`]): a page's
//!   URL and the API call behind it are the same query. Empty parameters — what an empty
//!   form field sends — are ignored; any other bad value is a 400 page naming it.
//! - `GET /plugins/{publisher}/{name}[?version=X]`: versions in SemVer order with their
//!   digests, the compatibility matrix, capabilities and outbound hosts, signature and
//!   verification state, SBOM components, lifecycle, reputation and the install snippet
//!   pinned by digest (`#install-digest`).
//!
//! Everything shown is escaped here ([`escape`]); the only markup taken from elsewhere is
//! the index's highlights, which [`super::index`] builds escaped, with `<b>` marks. This
//! module reads the index through [`Catalog`]; it owns no data and no search logic.

use super::PluginVersion;
use super::index::{Hit, SearchResults};
use super::service::{Catalog, SearchParams, install_snippet};
use axum::Router;
use axum::extract::{Path as UrlPath, Query, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use std::cmp::Reverse;
use std::fmt::{self, Write};
use std::sync::Arc;

const CSS: &str = include_str!("ui/berth.css");

/// The facets of [`SearchResults::facets`] the sidebar shows, in order, with their titles.
const FACETS: [(&str, &str); 6] = [
    ("category", "Category"),
    ("capability", "Capability"),
    ("publisher", "Publisher"),
    ("verified", "Verification"),
    ("lifecycle", "Lifecycle"),
    ("runner_api", "Runner API"),
];

/// Values listed per facet (the most frequent; selected values always show).
const FACET_VALUES_SHOWN: usize = 25;

/// No script, no frames, nothing from elsewhere: the pages need only themselves.
const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `GET /`, `GET /plugins/{publisher}/{name}` and the stylesheet.
pub fn routes(catalog: &Arc<Catalog>) -> Router {
    Router::new()
        .route("/", axum::routing::get(search_page))
        .route("/plugins/{publisher}/{name}", axum::routing::get(plugin_page))
        .route("/ui/berth.css", axum::routing::get(stylesheet))
        .with_state(Arc::clone(catalog))
}

/// `s` escaped for HTML text and for double- or single-quoted attribute values.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut done = 0;
        for (i, b) in self.0.bytes().enumerate() {
            let with = match b {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[done..i])?;
            f.write_str(with)?;
            done = i + 1;
        }
        f.write_str(&self.0[done..])
    }
}

/// `s` escaped for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

fn e(s: &str) -> Escaped<'_> {
    Escaped(s)
}

/// `s` percent-encoded as one query value or path segment (unreserved characters kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Sorts versions newest SemVer first; versions that are not SemVer go last, by name.
pub fn sort_newest_first(versions: &mut [PluginVersion]) {
    versions.sort_by_cached_key(|v| {
        let parsed = semver::Version::parse(&v.version).ok();
        (parsed.is_none(), Reverse(parsed), v.version.clone())
    });
}

/// An error page with its status.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    fn bad_request(message: impl Into<String>) -> UiError {
        UiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    fn not_found(message: impl Into<String>) -> UiError {
        UiError { status: StatusCode::NOT_FOUND, message: message.into() }
    }

    fn internal(e: impl fmt::Display) -> UiError {
        tracing::error!("catalog UI: {e}");
        UiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: "the catalog could not answer".into() }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::NOT_FOUND => "Not found",
            _ => "Error",
        };
        let main = format!(
            "<div class=\"error-page\" id=\"error\" data-status=\"{}\"><h1>{}</h1><p id=\"error-message\">{}</p>\
             <p><a href=\"/\">Back to the catalog</a></p></div>",
            self.status.as_u16(),
            e(title),
            e(&self.message)
        );
        html(self.status, &layout(title, &search_form("", ""), &main))
    }
}

fn html(status: StatusCode, body: &str) -> Response {
    let mut r = (status, Html(body.to_string())).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    r
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        CSS,
    )
        .into_response()
}

/// The page around `main`: head, the search form in the top bar, footer.
fn layout(title: &str, form: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · berth</title><link rel=\"stylesheet\" href=\"/ui/berth.css\"></head>\n\
         <body><header class=\"top\"><a class=\"brand\" href=\"/\">berth</a>{form}</header>\n\
         <main>{main}</main>\n<footer>berth plugin catalog · <a href=\"/api/v1/search\">JSON API</a></footer>\
         </body></html>\n",
        e(title)
    )
}

/// The search form: the text field and, as hidden fields, the filters in force (so a new
/// query keeps them).
fn search_form(q: &str, hidden: &str) -> String {
    format!(
        "<form class=\"search\" id=\"search-form\" method=\"get\" action=\"/\" role=\"search\">\
         <input type=\"search\" id=\"q\" name=\"q\" value=\"{}\" \
         placeholder=\"Search plugins, capabilities, dependencies\" \
         aria-label=\"Search\">{hidden}<button type=\"submit\" id=\"search-button\">Search</button></form>",
        e(q)
    )
}

// ---------------------------------------------------------------------------------------
// The search page

/// The search page's parameters, as its links change them.
#[derive(Debug, Clone, Default)]
struct Link {
    q: String,
    /// Selected values per facet, in [`FACETS`] order (`verified`: at most one).
    selected: Vec<(&'static str, Vec<String>)>,
    core: Option<String>,
    /// The tenant whose view this is (first-party and opted-in publishers); kept by every link.
    tenant: Option<String>,
    all_versions: bool,
    limit: usize,
}

fn split_list(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .map(|s| s.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

impl Link {
    fn new(p: &SearchParams) -> Link {
        let selected = FACETS
            .iter()
            .map(|&(facet, _)| {
                let values = match facet {
                    "category" => split_list(&p.category),
                    "capability" => split_list(&p.capability),
                    "publisher" => split_list(&p.publisher),
                    "verified" => p.verified.map(|v| vec![v.to_string()]).unwrap_or_default(),
                    "lifecycle" => split_list(&p.lifecycle),
                    _ => split_list(&p.runner_api),
                };
                (facet, values)
            })
            .collect();
        Link {
            q: p.q.clone(),
            selected,
            core: p.core.clone(),
            tenant: p.tenant.clone(),
            all_versions: p.all_versions,
            limit: p.limit,
        }
    }

    fn values(&self, facet: &str) -> &[String] {
        self.selected.iter().find(|(f, _)| *f == facet).map(|(_, v)| v.as_slice()).unwrap_or_default()
    }

    fn is_selected(&self, facet: &str, value: &str) -> bool {
        self.values(facet).iter().any(|v| v == value)
    }

    fn any_filter(&self) -> bool {
        self.selected.iter().any(|(_, v)| !v.is_empty()) || self.core.is_some()
    }

    /// This link with `value` of `facet` selected, or unselected when it was.
    fn toggle(&self, facet: &str, value: &str) -> Link {
        let mut l = self.clone();
        if let Some((_, values)) = l.selected.iter_mut().find(|(f, _)| *f == facet) {
            if let Some(i) = values.iter().position(|v| v == value) {
                values.remove(i);
            } else if facet == "verified" {
                *values = vec![value.to_string()];
            } else {
                values.push(value.to_string());
            }
        }
        l
    }

    /// This link without any filter (the text stays).
    fn cleared(&self) -> Link {
        Link {
            q: self.q.clone(),
            selected: Vec::new(),
            all_versions: self.all_versions,
            limit: self.limit,
            core: None,
            tenant: self.tenant.clone(),
        }
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if !self.q.is_empty() {
            pairs.push(("q", self.q.clone()));
        }
        for (facet, values) in &self.selected {
            if !values.is_empty() {
                pairs.push((facet, values.join(",")));
            }
        }
        if let Some(core) = &self.core {
            pairs.push(("core", core.clone()));
        }
        if let Some(tenant) = &self.tenant {
            pairs.push(("tenant", tenant.clone()));
        }
        if self.all_versions {
            pairs.push(("all_versions", "true".into()));
        }
        if self.limit != 0 {
            pairs.push(("limit", self.limit.to_string()));
        }
        pairs
    }

    /// The URL of this search at `offset` (not HTML-escaped).
    fn href(&self, offset: usize) -> String {
        let mut pairs = self.pairs();
        if offset != 0 {
            pairs.push(("offset", offset.to_string()));
        }
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| {
                // Commas separate list values: keep them readable.
                let v = v.split(',').map(encode).collect::<Vec<_>>().join(",");
                format!("{k}={v}")
            })
            .collect();
        if query.is_empty() { "/".to_string() } else { format!("/?{}", query.join("&")) }
    }

    /// The filters in force as hidden form fields (everything but `q` and paging).
    fn hidden_fields(&self) -> String {
        let mut out = String::new();
        for (k, v) in self.pairs() {
            if k != "q" {
                let _ = write!(out, "<input type=\"hidden\" name=\"{k}\" value=\"{}\">", e(&v));
            }
        }
        out
    }
}

/// Parses the query string as [`SearchParams`], skipping empty values (an empty form
/// field means "not set", as it would for a person).
fn parse_search_params(raw: Option<&str>) -> Result<SearchParams, UiError> {
    let kept: Vec<&str> = raw
        .unwrap_or_default()
        .split('&')
        .filter(|pair| pair.split_once('=').is_some_and(|(k, v)| !k.is_empty() && !v.is_empty()))
        .collect();
    let uri: Uri = format!("/?{}", kept.join("&"))
        .parse()
        .map_err(|_| UiError::bad_request("the query string is not a valid URL query"))?;
    Query::<SearchParams>::try_from_uri(&uri).map(|Query(p)| p).map_err(|e| UiError::bad_request(e.body_text()))
}

async fn search_page(State(c): State<Arc<Catalog>>, RawQuery(raw): RawQuery) -> Result<Response, UiError> {
    let params = parse_search_params(raw.as_deref())?;
    let mut query = params.to_query().map_err(UiError::bad_request)?;
    if let Some(tenant) = &params.tenant {
        c.restrict_to_tenant(&mut query, tenant).map_err(UiError::internal)?;
    }
    let index = Arc::clone(&c.index);
    let results = tokio::task::spawn_blocking(move || index.search(&query))
        .await
        .map_err(UiError::internal)?
        .map_err(UiError::internal)?;
    Ok(html(StatusCode::OK, &render_search(&params, &results)))
}

/// The whole search page for `params` and its `results`.
fn render_search(params: &SearchParams, results: &SearchResults) -> String {
    let link = Link::new(params);
    let title = if params.q.is_empty() { "Plugins".to_string() } else { format!("{} — search", params.q) };
    let mut main = String::from("<div class=\"search-layout\">");
    main.push_str(&render_facets(&link, results));
    main.push_str(&render_results(&link, params, results));
    main.push_str("</div>");
    layout(&title, &search_form(&params.q, &link.hidden_fields()), &main)
}

fn facet_label(facet: &str, value: &str) -> String {
    match (facet, value) {
        ("verified", "true") => "verified".into(),
        ("verified", "false") => "not verified".into(),
        _ => value.to_string(),
    }
}

fn render_facets(link: &Link, results: &SearchResults) -> String {
    let mut out = String::from("<aside class=\"facets\" id=\"facets\"><h2>Filters");
    if link.any_filter() {
        let _ = write!(out, " <a id=\"clear-filters\" href=\"{}\">clear all</a>", e(&link.cleared().href(0)));
    }
    out.push_str("</h2>");
    let empty = Default::default();
    for (facet, title) in FACETS {
        let counts = results.facets.get(facet).unwrap_or(&empty);
        let mut values: Vec<(&str, u64)> = counts.iter().map(|(v, n)| (v.as_str(), *n)).collect();
        values.sort_by_key(|&(v, n)| (Reverse(n), v));
        let hidden = values.len().saturating_sub(FACET_VALUES_SHOWN);
        values.truncate(FACET_VALUES_SHOWN);
        // Selected values stay visible (and removable) even when nothing matches them.
        for v in link.values(facet) {
            if !values.iter().any(|(x, _)| x == v) {
                values.push((v.as_str(), counts.get(v).copied().unwrap_or(0)));
            }
        }
        if values.is_empty() {
            continue;
        }
        let _ = write!(out, "<section class=\"facet-group\" data-facet-group=\"{facet}\"><h3>{title}</h3><ul>");
        for (value, count) in values {
            let on = link.is_selected(facet, value);
            let _ = write!(
                out,
                "<li><a class=\"facet{active}\" data-facet=\"{facet}\" data-value=\"{v}\" data-selected=\"{on}\" \
                 href=\"{href}\" title=\"{action}\"><span class=\"facet-value\">{label}</span> \
                 <span class=\"count\">{count}</span></a></li>",
                active = if on { " active" } else { "" },
                v = e(value),
                href = e(&link.toggle(facet, value).href(0)),
                action = if on { "Remove this filter" } else { "Filter by this value" },
                label = e(&facet_label(facet, value)),
            );
        }
        if hidden > 0 {
            let _ = write!(out, "<li class=\"more\">and {hidden} more</li>");
        }
        out.push_str("</ul></section>");
    }
    if let Some(core) = &link.core {
        let mut without = link.clone();
        without.core = None;
        let _ = write!(
            out,
            "<section class=\"facet-group\" data-facet-group=\"core\"><h3>Compatible with core</h3><ul>\
             <li><a class=\"facet active\" data-facet=\"core\" data-value=\"{v}\" data-selected=\"true\" \
             href=\"{href}\" \
             title=\"Remove this filter\"><span class=\"facet-value\">{v}</span></a></li></ul></section>",
            v = e(core),
            href = e(&without.href(0))
        );
    }
    out.push_str("</aside>");
    out
}

fn render_results(link: &Link, params: &SearchParams, results: &SearchResults) -> String {
    let noun = match (params.all_versions, results.total) {
        (false, 1) => "plugin",
        (false, _) => "plugins",
        (true, 1) => "version",
        (true, _) => "versions",
    };
    let mut out = format!("<section class=\"results\" id=\"results\" data-total=\"{}\">", results.total);
    let first = params.offset.saturating_add(1);
    let last = params.offset.saturating_add(results.hits.len());
    let shown = if results.hits.is_empty() || results.total <= results.hits.len() as u64 {
        String::new()
    } else {
        format!(", showing {first}–{last}")
    };
    let matching = if params.q.is_empty() { String::new() } else { format!(" matching “{}”", e(&params.q)) };
    let _ = write!(
        out,
        "<p class=\"summary\" id=\"summary\"><span id=\"total\">{}</span> {noun}{matching}{shown}</p>",
        results.total
    );
    if results.hits.is_empty() {
        out.push_str("<p class=\"empty\" id=\"no-results\">No plugin matches this search.");
        if link.any_filter() {
            let _ = write!(out, " <a href=\"{}\">Search without filters</a>", e(&link.cleared().href(0)));
        }
        out.push_str("</p>");
    } else {
        out.push_str("<ol class=\"result-list\">");
        for hit in &results.hits {
            out.push_str(&render_card(hit));
        }
        out.push_str("</ol>");
    }
    // Paging: the index's default page is 20 and it caps at 100, as `to_query` checks.
    let limit = if params.limit == 0 { 20 } else { params.limit };
    let has_prev = params.offset > 0;
    let has_next = (params.offset.saturating_add(results.hits.len()) as u64) < results.total;
    if has_prev || has_next {
        out.push_str("<nav class=\"pager\" id=\"pager\">");
        if has_prev {
            let _ = write!(
                out,
                "<a id=\"prev-page\" rel=\"prev\" href=\"{}\">← Previous</a>",
                e(&link.href(params.offset.saturating_sub(limit)))
            );
        } else {
            out.push_str("<span></span>");
        }
        if has_next {
            let _ = write!(
                out,
                "<a id=\"next-page\" rel=\"next\" href=\"{}\">Next →</a>",
                e(&link.href(params.offset.saturating_add(limit)))
            );
        }
        out.push_str("</nav>");
    }
    out.push_str("</section>");
    out
}

fn plugin_href(v: &PluginVersion) -> String {
    format!("/plugins/{}/{}", encode(&v.publisher), encode(&v.name))
}

fn version_href(v: &PluginVersion) -> String {
    format!("{}?version={}", plugin_href(v), encode(&v.version))
}

/// Badges: official, verified or unverified, and a lifecycle other than active.
fn badges(v: &PluginVersion) -> String {
    let mut out = String::from("<span class=\"badges\">");
    let mut badge = |kind: &str, title: &str| {
        let _ = write!(
            out,
            "<span class=\"badge badge-{kind}\" data-badge=\"{kind}\" title=\"{}\">{kind}</span>",
            e(title)
        );
    };
    if v.official {
        badge("official", "Published by this catalog's first-party publisher");
    }
    if v.verified {
        badge("verified", "The newest trusted verification report says verified");
    } else if v.verification == "unverified" {
        badge("unverified", "The newest trusted verification report found problems");
    } else {
        badge("unverified", "No trusted verification report yet");
    }
    match v.lifecycle.as_str() {
        "deprecated" => badge("deprecated", "Deprecated by the catalog"),
        "insecure" => badge("insecure", "Marked insecure by the catalog: do not install"),
        "removed" => badge("removed", "Removed from the catalog"),
        _ => {}
    }
    out.push_str("</span>");
    out
}

fn render_card(hit: &Hit) -> String {
    let v = &hit.version;
    let display = if v.display_name.is_empty() { &v.name } else { &v.display_name };
    let name = hit.highlights.get("display_name").cloned().unwrap_or_else(|| escape(display));
    let description = hit.highlights.get("description").cloned().unwrap_or_else(|| escape(&v.description));
    let mut out = format!(
        "<li class=\"result\" data-repository=\"{repo}\" data-version=\"{version}\" data-digest=\"{digest}\" \
         data-lifecycle=\"{lifecycle}\"><div class=\"result-head\"><a class=\"result-link\" href=\"{href}\">{name}</a> \
         <span class=\"version\">{version}</span>{badges}</div>\
         <div class=\"result-meta\"><span class=\"repository\">{repo}</span> by \
         <a class=\"publisher\" href=\"{publisher_href}\">{publisher}</a></div>\
         <p class=\"description\">{description}</p>",
        repo = e(&v.repository),
        version = e(&v.version),
        digest = e(&v.digest),
        lifecycle = e(&v.lifecycle),
        href = e(&version_href(v)),
        badges = badges(v),
        publisher_href = e(&format!("/?publisher={}", encode(&v.publisher))),
        publisher = e(&v.publisher),
    );
    if !v.categories.is_empty() || !v.capabilities.is_empty() {
        out.push_str("<ul class=\"tags\">");
        for c in &v.categories {
            let _ = write!(out, "<li class=\"tag\" data-category=\"{0}\">{0}</li>", e(c));
        }
        for c in &v.capabilities {
            let _ = write!(out, "<li class=\"tag\" data-capability=\"{0}\">{0}</li>", e(c));
        }
        out.push_str("</ul>");
    }
    out.push_str("</li>");
    out
}

// ---------------------------------------------------------------------------------------
// The plugin page

#[derive(Debug, Default, Deserialize)]
struct PageParams {
    version: Option<String>,
}

async fn plugin_page(
    State(c): State<Arc<Catalog>>,
    UrlPath((publisher, name)): UrlPath<(String, String)>,
    params: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let Query(params) = params.map_err(|e| UiError::bad_request(e.body_text()))?;
    let repository = format!("{publisher}/{name}");
    let index = Arc::clone(&c.index);
    let r = repository.clone();
    let versions = tokio::task::spawn_blocking(move || index.versions(&r))
        .await
        .map_err(UiError::internal)?
        .map_err(UiError::internal)?;
    let mut visible: Vec<PluginVersion> = versions.into_iter().filter(|v| v.lifecycle != "removed").collect();
    if visible.is_empty() {
        return Err(UiError::not_found(format!("There is no plugin {repository} in the catalog.")));
    }
    sort_newest_first(&mut visible);
    let selected = match params.version.as_deref().filter(|v| !v.is_empty()) {
        None => 0,
        Some(wanted) => visible
            .iter()
            .position(|v| v.version == wanted)
            .ok_or_else(|| UiError::not_found(format!("{repository} has no version {wanted} in the catalog.")))?,
    };
    Ok(html(StatusCode::OK, &render_plugin(&visible, selected)))
}

/// The issue rate (failures per install) as shown: a percentage, or a dash without installs.
fn issue_rate(v: &PluginVersion) -> String {
    if v.installs == 0 { "— (no installs reported)".to_string() } else { format!("{:.1} %", v.issue_rate() * 100.0) }
}

fn list_or_none(out: &mut String, id: &str, items: &[String], class: &str, none: &str) {
    if items.is_empty() {
        let _ = write!(out, "<p class=\"none\" id=\"{id}\" data-empty=\"true\">{}</p>", e(none));
        return;
    }
    let _ = write!(out, "<ul class=\"{class}\" id=\"{id}\">");
    for i in items {
        let _ = write!(out, "<li><code>{}</code></li>", e(i));
    }
    out.push_str("</ul>");
}

fn opt(s: &Option<String>) -> String {
    match s {
        Some(s) if !s.is_empty() => format!("<code>{}</code>", e(s)),
        _ => "<span class=\"none\">—</span>".to_string(),
    }
}

fn lifecycle_warning(v: &PluginVersion) -> String {
    let replacement = v
        .replacement
        .as_deref()
        .map(|r| format!(" Use <code id=\"replacement\">{}</code> instead.", e(r)))
        .unwrap_or_default();
    match v.lifecycle.as_str() {
        "deprecated" => format!(
            "<div class=\"warning warning-deprecated\" id=\"lifecycle-warning\" data-lifecycle=\"deprecated\" \
             role=\"alert\">\
             <strong>Deprecated.</strong> Version {} is deprecated.{replacement}</div>",
            e(&v.version)
        ),
        "insecure" => format!(
            "<div class=\"warning warning-insecure\" id=\"lifecycle-warning\" data-lifecycle=\"insecure\" \
             role=\"alert\">\
             <strong>Insecure.</strong> Version {} is marked insecure: do not install it.{replacement}</div>",
            e(&v.version)
        ),
        _ => String::new(),
    }
}

/// The plugin page for `versions` (newest first, none removed), showing `versions[selected]`.
fn render_plugin(versions: &[PluginVersion], selected: usize) -> String {
    let v = &versions[selected];
    let display = if v.display_name.is_empty() { &v.name } else { &v.display_name };
    let mut out = String::new();
    let _ = write!(
        out,
        "<article class=\"plugin\" id=\"plugin\" data-repository=\"{repo}\" data-version=\"{version}\" \
         data-digest=\"{digest}\" data-lifecycle=\"{lifecycle}\">\
         <nav class=\"crumbs\"><a href=\"/\">Catalog</a> / <a href=\"{publisher_href}\">{publisher}</a> / {name}</nav>\
         <div class=\"plugin-head\"><h1 id=\"plugin-name\">{display}</h1>\
         <span class=\"version\" id=\"plugin-version\">{version}</span>{badges}</div>\
         <p class=\"repository\" id=\"repository\">{repo}</p>{warning}\
         <p class=\"description\" id=\"description\">{description}</p>",
        repo = e(&v.repository),
        version = e(&v.version),
        digest = e(&v.digest),
        lifecycle = e(&v.lifecycle),
        publisher_href = e(&format!("/?publisher={}", encode(&v.publisher))),
        publisher = e(&v.publisher),
        name = e(&v.name),
        display = e(display),
        badges = badges(v),
        warning = lifecycle_warning(v),
        description = e(&v.description),
    );
    out.push_str("<div class=\"plugin-grid\">");

    // Install, pinned by digest.
    let _ = write!(
        out,
        "<section class=\"panel wide\" id=\"install\"><h2>Install</h2><dl class=\"facts\">\
         <dt>Digest</dt><dd><code id=\"install-digest\">{digest}</code></dd>\
         <dt>Reference</dt><dd><code id=\"install-reference\">{reference}</code></dd></dl>\
         <pre id=\"install-snippet\"><code>{snippet}</code></pre></section>",
        digest = e(&v.digest),
        reference = e(&v.reference),
        snippet = e(&install_snippet(v)),
    );

    // Reputation.
    let last_check = match &v.verified_at {
        Some(t) => format!("<time datetime=\"{0}\">{0}</time>", e(t)),
        None => "<span class=\"none\">never</span>".to_string(),
    };
    let _ = write!(
        out,
        "<section class=\"panel\" id=\"reputation\"><h2>Reputation</h2>\
         <p class=\"none\">Reported by runners, over every version of the plugin.</p><dl class=\"facts\">\
         <dt>Verification</dt><dd>{badge}</dd>\
         <dt>Installs</dt><dd id=\"installs\">{installs}</dd>\
         <dt>Failures reported</dt><dd id=\"failures\">{failures}</dd>\
         <dt>Issue rate</dt><dd id=\"issue-rate\">{rate}</dd>\
         <dt>Last compatibility check</dt><dd id=\"last-check\">{last_check}</dd></dl></section>",
        badge = if v.verified {
            "<span class=\"badge badge-verified\" data-badge=\"verified\">verified</span>"
        } else {
            "<span class=\"badge badge-unverified\" data-badge=\"unverified\">unverified</span>"
        },
        installs = v.installs,
        failures = v.failures,
        rate = issue_rate(v),
    );

    // Signature and verification.
    let (state, state_text) = match v.verification.as_str() {
        "verified" => ("verified", "verified"),
        "unverified" => ("unverified", "failed: the newest trusted report found problems"),
        _ => ("none", "no trusted verification report"),
    };
    let _ = write!(
        out,
        "<section class=\"panel\" id=\"verification\"><h2>Signature and verification</h2><dl class=\"facts\">\
         <dt>Signature</dt><dd id=\"signature\" data-signed=\"{signed}\">{signed_text}</dd>\
         <dt>Verification</dt><dd id=\"verification-state\" data-state=\"{state}\">{state_text}</dd>\
         <dt>Checked</dt><dd id=\"verified-at\">{last_check}</dd></dl><h3>Failed checks</h3>",
        signed = v.signed,
        signed_text = if v.signed {
            "<span class=\"badge badge-signed\">signed</span> \
             image and manifest verify with the publisher's registered keys"
        } else {
            "<span class=\"badge badge-unsigned\">not signed</span> \
             no signature verifies with the publisher's registered keys"
        },
    );
    list_or_none(&mut out, "failed-checks", &v.failed_checks, "plain", "none");
    out.push_str(
        "<h3>Vulnerabilities</h3><table id=\"vulnerabilities\"><thead><tr><th>Critical</th><th>High</th>\
         <th>Medium</th><th>Low</th><th>Unknown</th></tr></thead><tbody><tr>",
    );
    for (severity, n) in ["critical", "high", "medium", "low", "unknown"].iter().zip(v.vulnerabilities) {
        let hot = if n > 0 { " hot" } else { "" };
        let _ = write!(out, "<td class=\"num{hot}\" data-severity=\"{severity}\">{n}</td>");
    }
    out.push_str("</tr></tbody></table></section>");

    // Capabilities and outbound hosts.
    out.push_str(
        "<section class=\"panel\" id=\"capabilities\"><h2>Capabilities and outbound hosts</h2><h3>Capabilities</h3>",
    );
    list_or_none(&mut out, "capability-list", &v.capabilities, "plain", "none requested");
    out.push_str("<h3>Outbound hosts</h3>");
    list_or_none(&mut out, "outbound-hosts", &v.outbound_hosts, "plain", "none");
    out.push_str("</section>");

    // Lifecycle.
    let _ = write!(
        out,
        "<section class=\"panel\" id=\"lifecycle\"><h2>Lifecycle</h2><dl class=\"facts\">\
         <dt>Status</dt><dd id=\"lifecycle-status\" data-lifecycle=\"{l}\">{l}</dd>\
         <dt>Replacement</dt><dd>{replacement}</dd><dt>Created</dt><dd>{created}</dd>\
         <dt>Categories</dt><dd>",
        l = e(&v.lifecycle),
        replacement = opt(&v.replacement),
        created = opt(&v.created),
    );
    if v.categories.is_empty() {
        out.push_str("<span class=\"none\">—</span>");
    }
    for c in &v.categories {
        let _ = write!(out, "<a class=\"category\" href=\"{}\">{}</a> ", e(&format!("/?category={}", encode(c))), e(c));
    }
    out.push_str("</dd></dl></section>");

    // Versions and compatibility, newest SemVer first.
    out.push_str(
        "<section class=\"panel wide\" id=\"versions\"><h2>Versions</h2><table id=\"version-table\"><thead><tr>\
         <th>Version</th><th>Digest</th><th>Created</th><th>Lifecycle</th><th>Verification</th></tr></thead><tbody>",
    );
    for (i, x) in versions.iter().enumerate() {
        let _ = write!(
            out,
            "<tr class=\"version-row{sel}\" data-version=\"{version}\" data-digest=\"{digest}\"><td>\
             <a href=\"{href}\">{version}</a></td><td><code class=\"digest\">{digest}</code></td><td>{created}</td>\
             <td>{lifecycle}</td><td>{verification}</td></tr>",
            sel = if i == selected { " selected" } else { "" },
            version = e(&x.version),
            digest = e(&x.digest),
            href = e(&version_href(x)),
            created = opt(&x.created),
            lifecycle = e(&x.lifecycle),
            verification = e(&x.verification),
        );
    }
    out.push_str(
        "</tbody></table></section><section class=\"panel wide\" id=\"compatibility\"><h2>Compatibility</h2>\
         <table id=\"compatibility-matrix\"><thead><tr><th>Version</th><th>Runner API</th><th>Minimum core</th>\
         <th>Minimum runner</th></tr></thead><tbody>",
    );
    for (i, x) in versions.iter().enumerate() {
        let _ = write!(
            out,
            "<tr class=\"compat-row{sel}\" data-version=\"{version}\"><td>{version}</td>\
             <td data-runner-api=\"{api}\"><code>{api}</code></td><td>{core}</td><td>{runner}</td></tr>",
            sel = if i == selected { " selected" } else { "" },
            version = e(&x.version),
            api = e(&x.runner_api),
            core = opt(&x.min_core),
            runner = opt(&x.min_runner),
        );
    }
    out.push_str("</tbody></table></section>");

    // SBOM.
    let _ =
        write!(out, "<section class=\"panel wide\" id=\"sbom\"><h2>SBOM components ({})</h2>", v.sbom_components.len());
    list_or_none(&mut out, "sbom-components", &v.sbom_components, "columns", "no SBOM components");
    out.push_str("</section></div></article>");

    layout(&format!("{display} {}", v.version), &search_form("", ""), &out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::harvest::HarvestSettings;
    use crate::catalog::index::CatalogIndex;
    use crate::content::remote::RemoteOptions;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn version(name: &str, v: &str) -> PluginVersion {
        PluginVersion {
            repository: format!("acme/{name}"),
            publisher: "acme".into(),
            name: name.into(),
            display_name: format!("{name} plugin"),
            description: format!("{name} does things"),
            version: v.into(),
            digest: format!("sha256:{:064x}", v.bytes().map(u64::from).sum::<u64>() + name.len() as u64),
            reference: format!("registry.test/acme/{name}@sha256:{}", "0".repeat(64)),
            categories: vec!["network".into()],
            capabilities: vec!["outbound_http".into()],
            outbound_hosts: vec!["api.example.com".into()],
            runner_api: "1.0".into(),
            min_core: Some("1.0.0".into()),
            sbom_components: vec!["serde".into()],
            signed: true,
            verified: true,
            verification: "verified".into(),
            lifecycle: "active".into(),
            ..PluginVersion::default()
        }
    }

    #[test]
    fn escape_replaces_every_markup_character() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn encode_keeps_unreserved_characters_only() {
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn hostile_text_is_escaped_on_both_pages() {
        let mut v = version("evil", "1.0.0");
        v.description = "<script>alert(1)</script>".into();
        v.display_name = "\"><img src=x onerror=alert(1)>".into();
        v.outbound_hosts = vec!["<b>host</b>".into()];
        v.failed_checks = vec!["<i>check</i>".into()];
        let page = render_plugin(std::slice::from_ref(&v), 0);
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<b>host</b>") && !page.contains("<i>check</i>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

        let results = SearchResults {
            total: 1,
            hits: vec![Hit { score: 1.0, version: v, highlights: Default::default() }],
            facets: [("category".to_string(), [("<x>".to_string(), 1u64)].into())].into(),
            took_us: 1,
        };
        let params = SearchParams { q: "\"><script>".into(), ..SearchParams::default() };
        let page = render_search(&params, &results);
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("data-value=\"&lt;x&gt;\""), "{page}");
    }

    #[test]
    fn highlights_are_used_as_the_index_made_them() {
        let v = version("probe", "1.0.0");
        let hit = Hit {
            score: 1.0,
            version: v,
            highlights: [("description".to_string(), "<b>probe</b> does &lt;things&gt;".to_string())].into(),
        };
        let card = render_card(&hit);
        assert!(card.contains("<p class=\"description\"><b>probe</b> does &lt;things&gt;</p>"), "{card}");
    }

    #[test]
    fn versions_sort_by_semver_newest_first() {
        let mut vs: Vec<PluginVersion> = ["1.9.0", "not-semver", "1.10.0", "1.10.0-rc.1", "0.2.0", "2.0.0"]
            .iter()
            .map(|v| version("p", v))
            .collect();
        sort_newest_first(&mut vs);
        let order: Vec<&str> = vs.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(order, ["2.0.0", "1.10.0", "1.10.0-rc.1", "1.9.0", "0.2.0", "not-semver"]);

        let page = render_plugin(&vs, 0);
        let at = |s: &str| page.find(&format!("data-version=\"{s}\" data-digest")).unwrap();
        assert!(at("1.10.0") < at("1.9.0"), "1.10.0 is listed above 1.9.0");
    }

    #[test]
    fn badges_follow_lifecycle_and_verification() {
        let mut v = version("p", "1.0.0");
        v.official = true;
        let b = badges(&v);
        assert!(b.contains("data-badge=\"official\"") && b.contains("data-badge=\"verified\""), "{b}");
        assert!(!b.contains("deprecated") && !b.contains("insecure") && !b.contains("data-badge=\"unverified\""));

        v.official = false;
        v.verified = false;
        v.verification = "unverified".into();
        v.lifecycle = "deprecated".into();
        let b = badges(&v);
        assert!(!b.contains("official"), "{b}");
        assert!(b.contains("data-badge=\"unverified\"") && b.contains("data-badge=\"deprecated\""), "{b}");
        assert!(!b.contains("insecure"));

        v.lifecycle = "insecure".into();
        assert!(badges(&v).contains("data-badge=\"insecure\""));
    }

    #[test]
    fn lifecycle_warnings_name_the_replacement() {
        let mut v = version("p", "1.0.0");
        assert!(!render_plugin(std::slice::from_ref(&v), 0).contains("id=\"lifecycle-warning\""));
        v.lifecycle = "deprecated".into();
        v.replacement = Some("acme/p@2.0.0".into());
        let page = render_plugin(std::slice::from_ref(&v), 0);
        assert!(page.contains("warning-deprecated") && page.contains("<code id=\"replacement\">acme/p@2.0.0</code>"));
        v.lifecycle = "insecure".into();
        let page = render_plugin(std::slice::from_ref(&v), 0);
        assert!(page.contains("warning-insecure") && page.contains("do not install"), "{page}");
    }

    #[test]
    fn plugin_page_shows_reputation_and_the_pinned_install() {
        let mut v = version("p", "1.0.0");
        v.installs = 200;
        v.failures = 5;
        v.vulnerabilities = [1, 2, 0, 0, 3];
        v.verified_at = Some("2025-01-02T03:04:05Z".into());
        let page = render_plugin(std::slice::from_ref(&v), 0);
        assert!(page.contains(&format!("<code id=\"install-digest\">{}</code>", v.digest)), "{page}");
        assert!(page.contains("id=\"issue-rate\">2.5 %"), "{page}");
        assert!(page.contains("data-severity=\"unknown\">3<"), "{page}");
        assert!(page.contains("datetime=\"2025-01-02T03:04:05Z\""));
        assert!(page.contains(&escape(&install_snippet(&v))));

        v.installs = 0;
        assert!(render_plugin(std::slice::from_ref(&v), 0).contains("id=\"issue-rate\">— (no installs"));
    }

    #[test]
    fn facet_links_add_and_remove_filters() {
        let params = SearchParams { q: "json x".into(), category: Some("network".into()), ..SearchParams::default() };
        let link = Link::new(&params);
        assert_eq!(link.toggle("category", "data").href(0), "/?q=json%20x&category=network,data");
        assert_eq!(link.toggle("category", "network").href(0), "/?q=json%20x");
        assert_eq!(
            link.toggle("verified", "true").toggle("verified", "false").href(20),
            "/?q=json%20x&category=network&verified=false&offset=20"
        );
        assert_eq!(link.cleared().href(0), "/?q=json%20x");
        assert_eq!(Link::default().href(0), "/");
    }

    #[test]
    fn empty_form_fields_are_ignored_and_bad_values_named() {
        let p = parse_search_params(Some("q=&core=&category=net&verified=")).unwrap();
        assert_eq!(p.category.as_deref(), Some("net"));
        assert!(p.core.is_none() && p.verified.is_none());
        let e = parse_search_params(Some("verified=maybe")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("verified"), "{}", e.message);
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
        let r = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = r.status();
        let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn pages_are_served_from_the_index() {
        let index = CatalogIndex::in_memory().unwrap();
        for v in ["1.9.0", "1.10.0"] {
            index.upsert(&version("probe", v)).unwrap();
        }
        let mut other = version("transform", "0.1.0");
        other.categories = vec!["data".into()];
        other.lifecycle = "deprecated".into();
        index.upsert(&other).unwrap();
        let mut gone = version("probe", "2.0.0");
        gone.lifecycle = "removed".into();
        index.upsert(&gone).unwrap();
        index.commit().unwrap();
        let catalog = Catalog::new(index, HarvestSettings::default(), "127.0.0.1:1".into(), RemoteOptions::default());
        let app = routes(&catalog);

        let (status, page) = get(&app, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("data-repository=\"acme/probe\"") && page.contains("data-repository=\"acme/transform\""));
        assert!(page.contains("data-facet=\"category\" data-value=\"data\""), "{page}");

        let (_, page) = get(&app, "/?category=data").await;
        assert!(!page.contains("class=\"result\" data-repository=\"acme/probe\""), "{page}");
        assert!(page.contains("data-badge=\"deprecated\""));

        let (status, page) = get(&app, "/?limit=1000").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("limit"), "{page}");

        let (status, page) = get(&app, "/plugins/acme/probe").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains(&format!("id=\"install-digest\">{}<", version("probe", "1.10.0").digest)), "{page}");
        assert!(!page.contains("data-version=\"2.0.0\""), "removed versions are hidden");

        let (_, page) = get(&app, "/plugins/acme/probe?version=1.9.0").await;
        assert!(page.contains(&format!("id=\"install-digest\">{}<", version("probe", "1.9.0").digest)));

        assert_eq!(get(&app, "/plugins/acme/probe?version=2.0.0").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&app, "/plugins/acme/nope").await.0, StatusCode::NOT_FOUND);
        let (status, css) = get(&app, "/ui/berth.css").await;
        assert_eq!(status, StatusCode::OK);
        assert!(css.contains(".result"));
    }
}
