//! The catalog's HTTP API as an OpenAPI 3.1 document: `schemas/catalog-api.v1.openapi.json`,
//! built into the binary and served at `GET /api/openapi.json`.
//!
//! The document covers what `berth serve` answers besides the OCI distribution API (`/v2/`,
//! `/token`, which the distribution spec documents): search and plugin pages
//! ([`super::service`]), reputation ([`super::reputation`]), the publisher write path,
//! lifecycle and tenants ([`super::governance`]), verification ([`crate::verify::worker`]),
//! `/metrics` ([`crate::metrics`]) and, briefly, the web UI's pages ([`super::ui`]).
//!
//! [`Contract`] checks an answer against the document (status, media type, body schema, error
//! code); the integration tests run it on a live server's answers. The tests here keep the
//! document true to the source: the routes each router registers, the statuses and error codes
//! each handler (and the helpers it calls) can answer, the request body types and the search
//! parameters, and the JSON the catalog's types serialize to.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../../schemas/catalog-api.v1.openapi.json");

/// `GET /api/openapi.json`.
pub fn routes() -> Router {
    Router::new().route("/api/openapi.json", axum::routing::get(document))
}

async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

/// The HTTP methods an OpenAPI path item may hold.
pub const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// The document, to check answers against.
#[derive(Debug, Clone)]
pub struct Contract {
    doc: Value,
}

impl Default for Contract {
    fn default() -> Self {
        Self::new()
    }
}

impl Contract {
    pub fn new() -> Contract {
        // Compiled in and parsed by the tests: it is JSON.
        Contract { doc: serde_json::from_str(DOCUMENT).unwrap_or(Value::Null) }
    }

    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// Every operation, as (lowercase method, path template), in document order.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flat_map(|o| o.keys()) {
                if METHODS.contains(&method.as_str()) {
                    out.push((method.clone(), path.clone()));
                }
            }
        }
        out
    }

    /// The path template `path` (query string allowed) falls under: of those that match, the
    /// one with the most literal segments.
    pub fn template(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        let mut best: Option<(usize, &String)> = None;
        for template in self.doc["paths"].as_object().into_iter().flat_map(|o| o.keys()) {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut literal = 0;
            let fits = parts.iter().zip(&segments).all(|(t, s)| {
                if t.starts_with('{') && t.ends_with('}') {
                    !s.is_empty()
                } else {
                    literal += 1;
                    t == s
                }
            });
            if fits && best.is_none_or(|(n, _)| literal > n) {
                best = Some((literal, template));
            }
        }
        best.map(|(_, t)| t.clone())
    }

    /// Follows local `$ref`s to what they name.
    pub fn deref<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => self.doc.pointer(pointer).map_or(&Value::Null, |t| self.deref(t)),
            None => v,
        }
    }

    /// The problems of `value` against `schema`, a schema of the document (its `$ref`s resolve
    /// in the document, which OpenAPI 3.1 lets serve as a JSON Schema 2020-12 root).
    pub fn problems(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut root = self.doc.clone();
        root["$defs"] = json!({ "under_test": schema });
        root["$ref"] = json!("#/$defs/under_test");
        match jsonschema::draft202012::new(&root) {
            Ok(validator) => {
                validator.iter_errors(value).map(|e| format!("{}: {e}", e.instance_path().as_str())).collect()
            }
            Err(e) => vec![format!("the schema {schema} does not compile: {e}")],
        }
    }

    /// Checks that the document says `method path` may answer `status` with `content_type`
    /// and `body`: the status is documented, the media type too, a JSON body matches the
    /// schema, and an error's code is one of the examples of that status.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), String> {
        let method = method.to_ascii_lowercase();
        let what = format!("{} {path} answering {status}", method.to_uppercase());
        let template = self.template(path).ok_or_else(|| format!("{what}: the path is not documented"))?;
        let op = &self.doc["paths"][&template][&method];
        if !op.is_object() {
            return Err(format!("{what}: {} {template} is not documented", method.to_uppercase()));
        }
        let response = self.deref(&op["responses"][status.to_string()]);
        if !response.is_object() {
            return Err(format!("{what}: the status is not documented: {}", String::from_utf8_lossy(body)));
        }
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return if body.is_empty() { Ok(()) } else { Err(format!("{what}: documented without a body")) };
        };
        let media_type = content_type.and_then(|c| c.split(';').next()).unwrap_or_default().trim();
        let media = content
            .get(media_type)
            .ok_or_else(|| format!("{what}: {media_type:?} is not documented (only {:?})", content.keys()))?;
        if media_type != "application/json" {
            return Ok(());
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("{what}: the body is not JSON: {e}: {}", String::from_utf8_lossy(body)))?;
        let problems = self.problems(&media["schema"], &value);
        if !problems.is_empty() {
            return Err(format!("{what}: the body does not match its schema: {problems:?}\n{value:#}"));
        }
        if status >= 400 {
            let code = value["error"]["code"].as_str().unwrap_or_default();
            if media["examples"].get(code).is_none() {
                return Err(format!("{what}: error code {code:?} is not documented for this status"));
            }
        }
        Ok(())
    }
}

/// Checks an error response's JSON media type object (`at` names it in failures): the error
/// envelope schema, and one example per error code, each code one of `codes`.
#[cfg(test)]
pub(crate) fn assert_error_media(at: &str, media: &serde_json::Value, codes: &std::collections::BTreeSet<&str>) {
    assert_eq!(media["schema"]["$ref"], "#/components/schemas/ErrorBody", "{at}");
    let examples = media["examples"].as_object().unwrap_or_else(|| panic!("{at}: examples"));
    assert!(!examples.is_empty(), "{at}: an example per code");
    for (code, example) in examples {
        assert_eq!(example["value"]["error"]["code"], code.as_str(), "{at}: example {code}");
        assert!(codes.contains(code.as_str()), "{at}: {code} is not an ErrorCode");
    }
}

/// Every media type object of an OpenAPI document that has a schema and examples (tests check
/// each example against its schema).
#[cfg(test)]
pub(crate) fn media_with_examples(doc: &serde_json::Value) -> Vec<&serde_json::Value> {
    fn walk<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => {
                if m.contains_key("schema") && (m.contains_key("example") || m.contains_key("examples")) {
                    out.push(v);
                }
                m.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut out);
    out
}

#[cfg(test)]
mod tests {
    //! Keeps `schemas/catalog-api.v1.openapi.json` true to the source. axum cannot list a
    //! router's routes, so they are read from the text of the files that register them (every
    //! `.route(` there), and the routers merged into `berth serve` are checked to be those
    //! files'. For each route's handler the statuses and error codes it can answer are
    //! gathered from its text and the text of the functions it calls (transitively, within its
    //! file; `Directory` calls through `From<DirectoryError>`), and compared with the document.
    //! The integration test `openapi` checks the live server's answers against it.

    use super::*;
    use crate::catalog::PluginVersion;
    use crate::catalog::index::{CatalogIndex, SearchQuery};
    use crate::catalog::service::{ApiError, SearchParams};
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use std::collections::{BTreeMap, BTreeSet};
    use tower::ServiceExt;

    const SERVICE: &str = include_str!("service.rs");
    const GOVERNANCE: &str = include_str!("governance.rs");
    const REPUTATION: &str = include_str!("reputation.rs");
    const WORKER: &str = include_str!("../verify/worker.rs");
    const METRICS: &str = include_str!("../metrics.rs");
    const UI: &str = include_str!("ui.rs");
    const OPENAPI: &str = include_str!("openapi.rs");
    const DIRECTORY: &str = include_str!("directory.rs");
    const SERVER: &str = include_str!("../registry/server.rs");

    /// The files whose routes `berth serve` serves besides the registry's, with whether their
    /// handlers answer JSON (their errors are analysed) or not (only their routes are).
    const FILES: &[(&str, &str, bool)] = &[
        ("catalog/service.rs", SERVICE, true),
        ("catalog/governance.rs", GOVERNANCE, true),
        ("catalog/reputation.rs", REPUTATION, true),
        ("verify/worker.rs", WORKER, true),
        ("catalog/openapi.rs", OPENAPI, true),
        ("metrics.rs", METRICS, false),
        ("catalog/ui.rs", UI, false),
    ];

    /// The routers `berth serve` merges into the registry's (`registry/server.rs`, `run`), and
    /// those `Catalog::routes` merges into its own: each is one of [`FILES`].
    const SERVER_MERGES: &[&str] = &["v.routes()", "governance.routes()", "catalog.routes()"];
    const CATALOG_MERGES: &[&str] =
        &["super::reputation::routes(self)", "super::ui::routes(self)", "super::openapi::routes()"];

    /// Error codes a handler's text reaches that it cannot answer, with why.
    const UNREACHABLE: &[(&str, &str, u16, &str, &str)] = &[(
        "post",
        "/api/v1/publishers",
        404,
        "not_found",
        "Directory::register reads back the row it has just inserted",
    )];

    /// The request body types (or the parser) a handler names, and the schemas documenting them.
    const BODIES: &[(&str, &str)] = &[
        ("Json<Registration>", "Registration"),
        ("Json<TokenRequest>", "TokenRequest"),
        ("from_slice::<TokenRequest>", "TokenRequest"),
        ("Json<KeyRequest>", "KeyRequest"),
        ("Json<LifecycleRequest>", "LifecycleRequest"),
        ("RerunBody", "RerunRequest"),
        ("ReviewBody", "ReviewRequest"),
        ("parse_report(", "ReportRequest"),
    ];

    /// The statuses `ApiError`s are built with.
    const STATUSES: &[(&str, u16)] = &[
        ("BAD_REQUEST", 400),
        ("UNAUTHORIZED", 401),
        ("FORBIDDEN", 403),
        ("NOT_FOUND", 404),
        ("CONFLICT", 409),
        ("PAYLOAD_TOO_LARGE", 413),
        ("INTERNAL_SERVER_ERROR", 500),
    ];

    /// What axum answers itself when an optional JSON body (`Option<Json<T>>`) is malformed:
    /// plain text, not the error envelope.
    const OPTIONAL_JSON_REJECTIONS: [&str; 3] = ["400", "415", "422"];

    type Codes = BTreeSet<(u16, String)>;

    fn contract() -> Contract {
        let doc: Value = serde_json::from_str(DOCUMENT).expect("catalog-api.v1.openapi.json is JSON");
        Contract { doc }
    }

    /// `text` without its tests module.
    fn code(text: &'static str) -> &'static str {
        text.find("\n#[cfg(test)]\nmod tests").map_or(text, |end| &text[..end])
    }

    /// The texts of every `fn <name>` in `code`, each through its closing brace (rustfmt's
    /// layout: the brace is at the indentation of the `fn` line).
    fn bodies(code: &'static str, name: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        for pattern in [format!("fn {name}("), format!("fn {name}<")] {
            for (start, _) in code.match_indices(pattern.as_str()) {
                if start > 0 && is_ident(code[..start].chars().last().unwrap_or(' ')) {
                    continue;
                }
                let line = code[..start].rfind('\n').map_or(0, |i| i + 1);
                let indent: String = code[line..].chars().take_while(|c| *c == ' ').collect();
                if let Some(end) = code[start..].find(&format!("\n{indent}}}\n")) {
                    out.push(&code[start..start + end]);
                }
            }
        }
        out
    }

    /// The text of the first `fn <name>` in `code`.
    fn body(code: &'static str, name: &str) -> Option<&'static str> {
        bodies(code, name).into_iter().next()
    }

    /// The text of handler `name`: the `async fn` of that name at the top level of `code`.
    fn handler(code: &'static str, name: &str) -> Option<&'static str> {
        let start = code.find(&format!("\nasync fn {name}("))? + 1;
        let end = code[start..].find("\n}\n")?;
        Some(&code[start..start + end])
    }

    fn is_ident(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    /// The identifier starting at `s`.
    fn ident(s: &str) -> &str {
        &s[..s.find(|c: char| !is_ident(c)).unwrap_or(s.len())]
    }

    /// The names of the functions `code` defines.
    fn functions(code: &str) -> BTreeSet<&str> {
        code.match_indices("fn ")
            .filter(|(i, _)| *i == 0 || !is_ident(code[..*i].chars().last().unwrap_or(' ')))
            .map(|(i, _)| ident(&code[i + 3..]))
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// The functions of `defined` that `text` calls (`name(`, or passes as `(name)`), not
    /// counting method calls on a `directory`.
    fn calls<'a>(text: &str, defined: &BTreeSet<&'a str>) -> BTreeSet<&'a str> {
        let mut out = BTreeSet::new();
        for (i, c) in text.char_indices() {
            if !is_ident(c) || (i > 0 && is_ident(text[..i].chars().last().unwrap_or(' '))) {
                continue;
            }
            let name = ident(&text[i..]);
            let after = &text[i + name.len()..];
            let passed = text[..i].ends_with('(') && after.starts_with(')');
            if (after.starts_with('(') || passed)
                && !text[..i].ends_with("directory.")
                && let Some(f) = defined.get(name)
            {
                out.insert(*f);
            }
        }
        out
    }

    fn status_of(name: &str) -> u16 {
        STATUSES.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("StatusCode::{name}: add it to STATUSES")).1
    }

    /// `(status, code)` of every `StatusCode::<X>, "<code>"` and `bad("<code>"` in `text`.
    fn codes_in(text: &str) -> Codes {
        let mut out = Codes::new();
        for (i, _) in text.match_indices("StatusCode::") {
            let rest = &text[i + "StatusCode::".len()..];
            let name = ident(rest);
            let Some(after) = rest[name.len()..].trim_start().strip_prefix(',') else { continue };
            let Some(after) = after.trim_start().strip_prefix('"') else { continue };
            out.insert((status_of(name), after[..after.find('"').expect("a closing quote")].to_string()));
        }
        for (i, _) in text.match_indices("bad(") {
            if i > 0 && is_ident(text[..i].chars().last().unwrap_or(' ')) {
                continue;
            }
            if let Some(after) = text[i + 4..].trim_start().strip_prefix('"') {
                out.insert((400, after[..after.find('"').expect("a closing quote")].to_string()));
            }
        }
        out
    }

    /// What `Directory::<name>` can fail with, as `DirectoryError` variants (`Other` for the
    /// rest), following its calls of other methods.
    fn directory_errors(name: &str, seen: &mut BTreeSet<String>) -> BTreeSet<&'static str> {
        let mut out = BTreeSet::new();
        if !seen.insert(name.to_string()) {
            return out;
        }
        let code = code(DIRECTORY);
        let f = body(code, name).unwrap_or_else(|| panic!("no fn {name} in directory.rs"));
        let signature = &f[..f.find('{').expect("a body")];
        if !signature.contains("Result<") {
            return out;
        }
        out.insert("Other");
        for variant in ["NotFound", "Conflict"] {
            if f.contains(&format!("DirectoryError::{variant}(")) {
                out.insert(variant);
            }
        }
        let defined = functions(code);
        for (i, _) in f.match_indices("self.") {
            let callee = ident(&f[i + 5..]);
            if f[i + 5 + callee.len()..].starts_with('(') && defined.contains(callee) && callee != name {
                out.extend(directory_errors(callee, seen));
            }
        }
        out
    }

    /// How `From<DirectoryError> for ApiError` answers each variant.
    fn directory_answers() -> BTreeMap<&'static str, (u16, String)> {
        let code = code(GOVERNANCE);
        let start = code.find("impl From<DirectoryError> for ApiError").expect("From<DirectoryError>");
        let end = start + code[start..].find("\n}\n").expect("its end");
        let mut out = BTreeMap::new();
        for line in code[start..end].lines().map(str::trim) {
            let Some(arm) = line.strip_prefix("DirectoryError::") else {
                if line.starts_with("e => internal(") {
                    out.insert("Other", (500, "internal".to_string()));
                }
                continue;
            };
            let variant = ident(arm);
            let codes = codes_in(line);
            assert_eq!(codes.len(), 1, "{line}: one answer per variant");
            let variant = ["NotFound", "Conflict"].into_iter().find(|v| *v == variant).expect("a known variant");
            out.insert(variant, codes.into_iter().next().expect("an answer"));
        }
        assert_eq!(out.len(), 3, "From<DirectoryError>: NotFound, Conflict and the rest: {out:?}");
        out
    }

    /// What `text`, a function of `code`, can answer, following the calls it makes (to every
    /// function of `code` of the callee's name).
    fn reachable(code: &'static str, text: &str, seen: &mut BTreeSet<String>) -> Codes {
        let mut out = codes_in(text);
        let answers = directory_answers();
        for (i, _) in text.match_indices("directory.") {
            let method = ident(&text[i + "directory.".len()..]);
            if text[i + "directory.".len() + method.len()..].starts_with('(') {
                for variant in directory_errors(method, &mut BTreeSet::new()) {
                    out.insert(answers[variant].clone());
                }
            }
        }
        let defined = functions(code);
        for callee in calls(text, &defined) {
            if seen.insert(callee.to_string()) {
                for f in bodies(code, callee) {
                    out.extend(reachable(code, f, seen));
                }
            }
        }
        out
    }

    /// A route of a router's text: method, path, handler, and the file it is in.
    #[derive(Debug)]
    struct Route {
        method: String,
        path: String,
        handler: String,
        file: &'static str,
        code: &'static str,
        json: bool,
    }

    /// Every `.route("<path>", <method router>)` in the files of [`FILES`].
    fn source_routes() -> Vec<Route> {
        let mut out = Vec::new();
        for (file, text, json) in FILES {
            let code = code(text);
            for unknown in [".nest(", ".route_service(", ".nest_service(", ".fallback("] {
                assert!(!code.contains(unknown), "{file} uses {unknown}: document it and teach this test");
            }
            for (i, _) in code.match_indices(".route(") {
                let rest = code[i + ".route(".len()..].trim_start();
                let rest = rest.strip_prefix('"').unwrap_or_else(|| panic!("{file}: a .route( without a literal path"));
                let (path, rest) = rest.split_once('"').expect("a closing quote");
                // The method router: up to the parenthesis closing `.route(`.
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|(_, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .expect("the end of .route(")
                    .0;
                let router = &rest[..end];
                let mut found = 0;
                for method in METHODS {
                    for (j, _) in router.match_indices(&format!("{method}(")) {
                        if !matches!(router[..j].chars().last(), Some(' ' | '.' | ':' | '(' | '\n')) {
                            continue;
                        }
                        let handler = ident(&router[j + method.len() + 1..]).to_string();
                        out.push(Route {
                            method: method.to_string(),
                            path: path.to_string(),
                            handler,
                            file,
                            code,
                            json: *json,
                        });
                        found += 1;
                    }
                }
                assert!(found > 0, "{file}: no method in the route of {path}: {router}");
            }
        }
        out
    }

    fn operation<'a>(c: &'a Contract, method: &str, path: &str) -> &'a Value {
        let op = &c.doc["paths"][path][method];
        assert!(op.is_object(), "{} {path} is not documented", method.to_uppercase());
        op
    }

    /// The `(status, code)`s an operation documents: the example keys of its JSON errors.
    fn documented_errors(c: &Contract, op: &Value) -> Codes {
        let mut out = Codes::new();
        for (status, response) in op["responses"].as_object().expect("responses") {
            let status: u16 = status.parse().unwrap_or_else(|_| panic!("status {status}"));
            let media = &c.deref(response)["content"]["application/json"];
            if status >= 400 && media.is_object() {
                for code in media["examples"].as_object().expect("an example per error code").keys() {
                    out.insert((status, code.clone()));
                }
            }
        }
        out
    }

    fn assert_valid(c: &Contract, schema: &str, value: &Value) {
        let problems = c.problems(&json!({ "$ref": format!("#/components/schemas/{schema}") }), value);
        assert!(problems.is_empty(), "{schema}: {problems:?}\n{value:#}");
    }

    #[test]
    fn the_document_is_openapi_3_1_and_its_references_resolve() {
        let c = contract();
        assert_eq!(c.doc["openapi"], "3.1.0");
        fn walk(c: &Contract, v: &Value) {
            match v {
                Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r}: only local references"));
                        assert!(c.doc.pointer(pointer).is_some(), "{r} does not resolve");
                    }
                    m.values().for_each(|v| walk(c, v));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(c, v)),
                _ => {}
            }
        }
        walk(&c, &c.doc);
        for (name, schema) in c.doc["components"]["schemas"].as_object().expect("schemas") {
            let problems = c.problems(schema, &Value::Null);
            assert!(!problems.iter().any(|p| p.contains("does not compile")), "{name}: {problems:?}");
        }
    }

    /// `openapi-spec-validator` (Python) judges the document against the OpenAPI 3.1 schema,
    /// which the JSON checks here do not.
    #[test]
    fn openapi_spec_validator_accepts_the_document() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/catalog-api.v1.openapi.json");
        let out = std::process::Command::new("python3").args(["-m", "openapi_spec_validator", path]).output();
        let out = out.unwrap_or_else(|e| panic!("python3 cannot run ({e}): the README's test command installs it"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("No module named"),
            "openapi-spec-validator is not installed: `python3 -m pip install openapi-spec-validator` \
             (the README's test command installs it): {stderr}"
        );
        assert!(out.status.success(), "{}{stderr}", String::from_utf8_lossy(&out.stdout));
    }

    #[tokio::test]
    async fn the_document_is_served_as_json() {
        let request = Request::builder().uri("/api/openapi.json").body(Body::empty()).expect("request");
        let response = routes().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        assert_eq!(bytes, DOCUMENT.as_bytes());
        contract().check("get", "/api/openapi.json", 200, Some("application/json"), &bytes).expect("documented");
    }

    #[test]
    fn the_document_has_every_route_and_no_other() {
        let c = contract();
        let mut routed = BTreeSet::new();
        for r in source_routes() {
            assert!(routed.insert((r.method.clone(), r.path.clone())), "{} {} routed twice", r.method, r.path);
        }
        let documented: BTreeSet<(String, String)> = c.operations().into_iter().collect();
        let missing: Vec<_> = routed.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(missing.is_empty(), "routed but not documented: {missing:?}");
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
        // Every path parameter is declared, and only those.
        for (method, path) in c.operations() {
            let op = operation(&c, &method, &path);
            let declared: BTreeSet<String> = [&c.doc["paths"][&path]["parameters"], &op["parameters"]]
                .into_iter()
                .filter_map(Value::as_array)
                .flatten()
                .map(|p| c.deref(p))
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().expect("a parameter name").to_string())
                .collect();
            let in_path: BTreeSet<String> =
                path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).map(String::from).collect();
            assert_eq!(declared, in_path, "{method} {path}: path parameters");
        }
    }

    /// The routers `berth serve` merges are those of [`FILES`]: a new one must be documented.
    #[test]
    fn serve_merges_only_the_routers_read_here() {
        let merges = |text: &str| -> BTreeSet<String> {
            text.match_indices(".merge(")
                .map(|(i, _)| {
                    let rest = &text[i + ".merge(".len()..];
                    let mut depth = 1;
                    let end = rest
                        .char_indices()
                        .find(|(_, c)| {
                            match c {
                                '(' => depth += 1,
                                ')' => depth -= 1,
                                _ => {}
                            }
                            depth == 0
                        })
                        .expect("the end of .merge(")
                        .0;
                    rest[..end].split_whitespace().collect()
                })
                .collect()
        };
        let run = body(code(SERVER), "run").expect("fn run in registry/server.rs");
        let expected: BTreeSet<String> = SERVER_MERGES.iter().map(|s| s.to_string()).collect();
        assert_eq!(merges(run), expected, "berth serve merges another router: document its routes");
        let catalog = body(code(SERVICE), "routes").expect("Catalog::routes");
        let expected: BTreeSet<String> = CATALOG_MERGES.iter().map(|s| s.to_string()).collect();
        assert_eq!(merges(catalog), expected, "Catalog::routes merges another router: document its routes");
        assert!(METRICS.contains("app.route(\"/metrics\""), "metrics.rs adds /metrics to the served app");
    }

    #[test]
    fn every_operation_is_complete_and_errors_share_one_schema() {
        let c = contract();
        let codes: BTreeSet<&str> = c.doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut ids = BTreeSet::new();
        for (method, path) in c.operations() {
            let op = operation(&c, &method, &path);
            let what = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"].as_str().filter(|s| !s.is_empty());
            assert!(ids.insert(id.unwrap_or_else(|| panic!("{what}: no operationId"))), "{what}: operationId reused");
            assert!(op["security"].is_array(), "{what}: say who may call it (security)");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{what}: no responses"));
            assert!(responses.keys().any(|s| s.starts_with('2')), "{what}: no 2xx response");
            for (status, response) in responses {
                let content = c.deref(response)["content"].as_object().cloned().unwrap_or_default();
                let Some(media) = content.get("application/json") else { continue };
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                assert_eq!(content.len(), 1, "{what} {status}: JSON errors only");
                crate::catalog::openapi::assert_error_media(&format!("{what} {status}"), media, &codes);
            }
        }
    }

    #[test]
    fn each_operation_documents_what_its_handler_answers() {
        let c = contract();
        let mut written = Codes::new();
        for r in source_routes() {
            let what = format!("{} {} ({}::{})", r.method.to_uppercase(), r.path, r.file, r.handler);
            let op = operation(&c, &r.method, &r.path);
            let responses = op["responses"].as_object().expect("responses");
            let success: Vec<&String> = responses.keys().filter(|s| s.starts_with('2')).collect();
            if !r.json {
                assert_eq!(success, ["200"], "{what}: success status");
                continue;
            }
            let f = handler(r.code, &r.handler).unwrap_or_else(|| panic!("{what}: no async fn {}", r.handler));
            let mut expected = reachable(r.code, f, &mut BTreeSet::from([r.handler.clone()]));
            written.extend(expected.iter().cloned());
            for (method, path, status, code, _why) in UNREACHABLE {
                if *method == r.method && *path == r.path {
                    assert!(
                        expected.remove(&(*status, code.to_string())),
                        "{what}: UNREACHABLE {status} {code} is stale"
                    );
                }
            }
            assert_eq!(documented_errors(&c, op), expected, "{what}: documented error codes");

            // `Ok((StatusCode::<X>, …))`, or 200 for a bare `Ok(…)`.
            let answered: BTreeSet<&str> = f
                .match_indices("Ok((")
                .filter_map(|(i, _)| f[i + 4..].trim_start().strip_prefix("StatusCode::"))
                .map(ident)
                .collect();
            let status = match answered.iter().copied().collect::<Vec<_>>()[..] {
                [] => "200",
                ["CREATED"] => "201",
                ["ACCEPTED"] => "202",
                _ => panic!("{what}: success statuses {answered:?}: teach this test"),
            };
            assert_eq!(success, [status], "{what}: success status");
            let media: Vec<&String> =
                c.deref(&responses[status])["content"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
            assert_eq!(media, ["application/json"], "{what}: success media type");

            // Framework answers: a malformed optional JSON body is axum's plain-text rejection.
            let optional_json = f.contains("Option<Json<");
            for status in OPTIONAL_JSON_REJECTIONS {
                let documented =
                    c.deref(&responses.get(status).cloned().unwrap_or_default())["content"].get("text/plain").is_some();
                assert_eq!(documented, optional_json, "{what}: axum's {status} for a malformed optional JSON body");
            }

            // The request body: the type the handler parses, required unless it may be absent.
            let request = &op["requestBody"];
            match BODIES.iter().find(|(marker, _)| f.contains(marker)) {
                Some((_, schema)) => {
                    // An optional body: `Option<Json<…>>`, or raw bytes where empty means none.
                    let optional_bytes = f.contains("body.is_empty()") || f.contains("is_ascii_whitespace");
                    let required = !(optional_json || optional_bytes);
                    assert_eq!(request["required"], required, "{what}: requestBody.required");
                    let documented = &request["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(documented, &format!("#/components/schemas/{schema}"), "{what}: request schema");
                }
                None => assert!(request.is_null(), "{what}: documents a request body its handler does not read"),
            }

            // Who may call it.
            let security = |schemes: &[&[&str]]| -> Value {
                Value::Array(
                    schemes
                        .iter()
                        .map(|s| Value::Object(s.iter().map(|n| (n.to_string(), json!([]))).collect()))
                        .collect(),
                )
            };
            let caller_required = f.contains(".caller(") && f.contains("Caller::Anonymous =>");
            let expected_security = if f.contains(".operator(") {
                security(&[&["operator"]])
            } else if f.contains(".operator_or(") || caller_required {
                security(&[&["operator"], &["publisher"]])
            } else if f.contains(".caller(") {
                security(&[&[], &["operator"], &["publisher"]])
            } else if f.contains("authorize(") {
                security(&[&["registry"]])
            } else {
                security(&[])
            };
            assert_eq!(op["security"], expected_security, "{what}: security");
        }
        let enumerated: BTreeSet<&str> = c.doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let answered: BTreeSet<&str> = written.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(enumerated, answered, "ErrorCode is not the set of codes the handlers answer");
    }

    /// The fields of `struct <name>` in `code`: (name, required), and whether unknown fields
    /// are refused.
    fn struct_fields(code: &str, name: &str) -> (BTreeMap<String, bool>, bool) {
        let start = code.find(&format!("struct {name} {{")).unwrap_or_else(|| panic!("no struct {name}"));
        let attributes = &code[code[..start].rfind("\n\n").unwrap_or(0)..start];
        let end = start + code[start..].find("\n}").expect("the end of the struct");
        let mut fields = BTreeMap::new();
        let mut default = false;
        for line in code[start..end].lines().skip(1).map(str::trim) {
            if line.starts_with("#[serde(default") {
                default = true;
            } else if let Some((field, ty)) = line.strip_prefix("pub ").unwrap_or(line).split_once(": ") {
                if line.starts_with("//") {
                    continue;
                }
                fields.insert(field.to_string(), !default && !ty.starts_with("Option<"));
                default = false;
            }
        }
        (fields, attributes.contains("deny_unknown_fields"))
    }

    fn schema_fields(c: &Contract, name: &str) -> (BTreeMap<String, bool>, bool) {
        let schema = &c.doc["components"]["schemas"][name];
        let required: BTreeSet<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let fields = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(|k| (k.clone(), required.contains(k.as_str())))
            .collect();
        (fields, schema["additionalProperties"] == false)
    }

    #[test]
    fn request_schemas_are_the_body_types() {
        let c = contract();
        for (file, text, structure, schema) in [
            ("governance.rs", GOVERNANCE, "Registration", "Registration"),
            ("governance.rs", GOVERNANCE, "TokenRequest", "TokenRequest"),
            ("governance.rs", GOVERNANCE, "KeyRequest", "KeyRequest"),
            ("governance.rs", GOVERNANCE, "LifecycleRequest", "LifecycleRequest"),
            ("worker.rs", WORKER, "RerunBody", "RerunRequest"),
            ("worker.rs", WORKER, "ReviewBody", "ReviewRequest"),
        ] {
            let (fields, strict) = struct_fields(code(text), structure);
            assert_eq!(
                schema_fields(&c, schema),
                (fields, strict),
                "{file} {structure} vs {schema}: (field → required), strict"
            );
        }
        // Reports are parsed by hand: the schema's example is accepted, without any of the
        // required fields it is not, and unknown fields are refused.
        let (fields, strict) = schema_fields(&c, "ReportRequest");
        assert!(strict);
        let example = c.doc["components"]["schemas"]["ReportRequest"]["examples"][0].clone();
        assert_valid(&c, "ReportRequest", &example);
        let parse = |v: &Value| crate::catalog::reputation::parse_report(v.to_string().as_bytes());
        parse(&example).expect("the example report parses");
        for (field, required) in &fields {
            let mut without = example.clone();
            without.as_object_mut().expect("an object").remove(field);
            assert_eq!(parse(&without).is_err(), *required, "ReportRequest without {field}");
        }
        let mut extra = example.clone();
        extra["unknown_field"] = json!(1);
        assert!(parse(&extra).is_err(), "unknown fields are refused");
    }

    #[test]
    fn search_parameters_are_search_params() {
        let c = contract();
        let (fields, strict) = struct_fields(code(SERVICE), "SearchParams");
        assert!(strict, "SearchParams refuses unknown parameters");
        for path in ["/api/v1/search", "/"] {
            let params: BTreeMap<String, bool> = c.doc["paths"][path]["get"]["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .map(|p| c.deref(p))
                .map(|p| (p["name"].as_str().expect("a name").to_string(), p["required"] == true))
                .collect();
            let optional: BTreeMap<String, bool> = fields.keys().map(|k| (k.clone(), false)).collect();
            assert_eq!(params, optional, "{path}: the parameters are SearchParams' fields, all optional");
        }
        let sample = |p: &Value| match p["schema"]["type"].as_str() {
            Some("boolean") => "true".to_string(),
            Some("integer") => "5".to_string(),
            _ => p["example"].as_str().map_or("x".to_string(), str::to_string),
        };
        let query: Vec<String> = c.doc["paths"]["/api/v1/search"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| c.deref(p))
            .map(|p| format!("{}={}", p["name"].as_str().expect("a name"), sample(p)))
            .collect();
        let parse = |q: &str| {
            let uri: axum::http::Uri = format!("/api/v1/search?{}", q.replace(' ', "+")).parse().expect("uri");
            axum::extract::Query::<SearchParams>::try_from_uri(&uri).map(|q| q.0)
        };
        let params = parse(&query.join("&")).expect("every documented parameter parses");
        params.to_query().expect("and makes a query");
        assert!(parse("unknown=1").is_err(), "an unknown parameter is refused");
        let limit = &c.deref(&c.doc["components"]["parameters"]["Search_limit"])["schema"]["maximum"];
        let max = limit.as_u64().expect("limit has a maximum");
        assert!(parse(&format!("limit={max}")).expect("parses").to_query().is_ok());
        assert!(parse(&format!("limit={}", max + 1)).expect("parses").to_query().is_err());
    }

    #[test]
    fn every_example_matches_its_schema() {
        let c = contract();
        let media = crate::catalog::openapi::media_with_examples(&c.doc);
        let mut checked = 0;
        for m in media {
            let examples = m["examples"].as_object().into_iter().flatten().map(|(k, e)| (k.as_str(), &e["value"]));
            for (name, value) in m.get("example").map(|e| ("example", e)).into_iter().chain(examples) {
                let problems = c.problems(&m["schema"], value);
                assert!(problems.is_empty(), "example {name} of {}: {problems:?}", m["schema"]);
                checked += 1;
            }
        }
        for (name, schema) in c.doc["components"]["schemas"].as_object().expect("schemas") {
            for value in schema["examples"].as_array().into_iter().flatten() {
                assert_valid(&c, name, value);
                checked += 1;
            }
        }
        assert!(checked > 40, "only {checked} examples");
    }

    #[tokio::test]
    async fn the_error_envelope_matches_the_schema() {
        let c = contract();
        let response = ApiError(StatusCode::NOT_FOUND, "not_found", "no plugin acme/nope in the catalog".into());
        let bytes = axum::body::to_bytes(response.into_response().into_body(), usize::MAX).await.expect("body");
        assert_valid(&c, "ErrorBody", &serde_json::from_slice(&bytes).expect("JSON"));
        c.check("get", "/api/v1/plugins/acme/nope", 404, Some("application/json"), &bytes).expect("documented");
        let err = c.check("get", "/api/v1/plugins/acme/nope", 409, Some("application/json"), &bytes);
        assert!(err.is_err_and(|e| e.contains("not documented")));
        let err = c.check("get", "/api/v1/search", 500, Some("application/json"), &bytes);
        assert!(err.is_err_and(|e| e.contains("\"not_found\" is not documented")));
    }

    fn version(publisher: &str, name: &str, version: &str, n: u8) -> PluginVersion {
        let digest = format!("sha256:{}", format!("{n:02x}").repeat(32));
        PluginVersion {
            repository: format!("{publisher}/{name}"),
            publisher: publisher.into(),
            name: name.into(),
            display_name: "JSON Transform".into(),
            description: "Reshapes JSON documents".into(),
            version: version.into(),
            reference: format!("127.0.0.1:5000/{publisher}/{name}@{digest}"),
            digest,
            categories: vec!["data".into()],
            capabilities: vec!["outbound_http".into()],
            outbound_hosts: vec!["api.example.com".into()],
            runner_api: "^1.0".into(),
            min_core: Some("1.0.0".into()),
            min_runner: None,
            sbom_components: vec!["serde".into()],
            signed: true,
            verified: true,
            verification: "verified".into(),
            verified_at: Some("2025-06-01T12:00:00Z".into()),
            failed_checks: vec![],
            vulnerabilities: [0, 1, 2, 3, 4],
            lifecycle: "deprecated".into(),
            replacement: Some("json-transform@2.0.0".into()),
            official: true,
            installs: 3,
            failures: 1,
            created: None,
        }
    }

    #[test]
    fn search_results_match_the_schema() {
        let c = contract();
        let dir = tempfile::tempdir().expect("tempdir");
        let index = CatalogIndex::open(dir.path()).expect("index");
        for (i, v) in ["1.0.0", "1.1.0"].iter().enumerate() {
            index.upsert(&version("acme", "json-transform", v, i as u8)).expect("upsert");
        }
        index.upsert(&version("beta", "probe", "0.1.0", 9)).expect("upsert");
        index.commit().expect("commit");
        for text in ["", "transform", "trnsform", "serde"] {
            for latest_only in [true, false] {
                let q = SearchQuery { text: text.into(), latest_only, ..SearchQuery::default() };
                let results = serde_json::to_value(index.search(&q).expect("search")).expect("JSON");
                assert!(results["total"].as_u64().unwrap_or_default() > 0 || text == "serde", "{results:#}");
                assert_valid(&c, "SearchResults", &results);
            }
        }
    }

    #[test]
    fn publishers_and_tokens_match_the_schema() {
        let c = contract();
        let directory = crate::catalog::directory::Directory::in_memory().expect("directory");
        let key = crate::sign::keys::test_key();
        let pem = key.public_key().to_pem().expect("pem");
        let added = crate::plugin::documents::PublisherKey {
            id: key.public_key().key_id().to_string(),
            algorithm: crate::plugin::documents::KeyAlgorithm::EcdsaP256Sha256,
            public_key_pem: pem,
            status: crate::plugin::documents::KeyStatus::Active,
            added: crate::catalog::directory::now(),
            revoked_at: None,
        };
        let contacts =
            json!({"support": {"email": "support@acme.example"}, "security": {"url": "https://acme.example"}});
        let p = directory.register("acme", "Acme", &contacts, std::slice::from_ref(&added)).expect("register");
        assert_valid(&c, "Publisher", &json!(p));
        let p = directory.decide("acme", crate::catalog::directory::State::Approved, "admin").expect("approve");
        assert_valid(&c, "Publisher", &json!(p));
        let revoked = crate::plugin::documents::PublisherKey {
            status: crate::plugin::documents::KeyStatus::Revoked,
            revoked_at: Some(crate::catalog::directory::now()),
            ..added
        };
        let p = directory.set_keys("acme", &[revoked]).expect("keys");
        assert_valid(&c, "Publisher", &json!(p));
        let (token, secret) = directory.issue_token("acme", "ci").expect("token");
        assert_valid(&c, "Token", &json!(token));
        let issued = c.doc["components"]["schemas"]["IssuedToken"]["properties"]["token"].clone();
        assert!(c.problems(&issued, &json!(secret)).is_empty(), "{secret}");
        assert_valid(&c, "Token", &json!(directory.revoke_token("acme", &token.id).expect("revoke")));
    }
}
