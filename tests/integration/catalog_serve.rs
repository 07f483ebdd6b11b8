//! The catalog inside a running `berth serve`: published plugins appear in the search API
//! and on plugin pages, kept current from registry events; `berth search` and `berth info`
//! read it; `berth index rebuild` from the registry alone gives the same search results as
//! the incrementally kept index.

use crate::common::*;
use berth::catalog::index::{CatalogIndex, SearchQuery};
use serde_json::Value;

fn digests(results: &berth::catalog::index::SearchResults) -> Vec<String> {
    results.hits.iter().map(|h| h.version.digest.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_plugins_are_searchable_and_a_rebuild_gives_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = first_party_config(dir.path());
    let mut server = BerthProcess::spawn(&data, &["--config", &config]);
    let host = server.url.trim_start_matches("http://").to_string();
    let transform = publish_first_party(dir.path(), &host, "json-transform");
    let probe = publish_first_party(dir.path(), &host, "http-probe");
    let digest = |r: &str| r.rsplit_once('@').unwrap().1.to_string();

    // Both appear, verified once the verifier's reports land.
    let url = &server.url;
    let all = wait_for(&format!("{url}/api/v1/search?q="), "both plugins, verified", |b| {
        b["total"] == 2 && b["hits"].as_array().unwrap().iter().all(|h| h["version"]["verified"] == true)
    })
    .await;
    assert_eq!(all["facets"]["publisher"]["aisopsflow"], 2, "{all:#}");

    // Full text, a typo, a prefix, a dependency name, a facet filter.
    let (_, r) = get_json(&format!("{url}/api/v1/search?q=transform")).await;
    assert_eq!(r["hits"][0]["version"]["digest"], digest(&transform), "{r:#}");
    let (_, r) = get_json(&format!("{url}/api/v1/search?q=trnsform")).await;
    assert_eq!(r["hits"][0]["version"]["digest"], digest(&transform), "typo: {r:#}");
    let (_, r) = get_json(&format!("{url}/api/v1/search?q=json-tr")).await;
    assert_eq!(r["hits"][0]["version"]["digest"], digest(&transform), "prefix: {r:#}");
    let (_, r) = get_json(&format!("{url}/api/v1/search?q=ureq")).await;
    assert_eq!(r["total"], 1, "http-probe ships ureq, json-transform does not: {r:#}");
    assert_eq!(r["hits"][0]["version"]["digest"], digest(&probe));
    let (_, r) = get_json(&format!("{url}/api/v1/search?category=network")).await;
    assert_eq!(r["total"], 1, "{r:#}");
    let (status, r) = get_json(&format!("{url}/api/v1/search?limit=1000")).await;
    assert_eq!(status, 400, "{r:#}");
    assert!(r["error"]["message"].as_str().unwrap().contains("limit"));

    // The plugin page: versions with digests and the install snippet pinned by digest.
    let (status, page) = get_json(&format!("{url}/api/v1/plugins/aisopsflow/json-transform")).await;
    assert_eq!(status, 200, "{page:#}");
    assert_eq!(page["versions"][0]["digest"], digest(&transform));
    assert!(page["install"].as_str().unwrap().contains(&transform), "{page:#}");
    let (status, _) = get_json(&format!("{url}/api/v1/plugins/aisopsflow/nope")).await;
    assert_eq!(status, 404);

    // The command line reads the same.
    let out = berth_in(dir.path(), &["search", "transform", "--server", url, "--json"]);
    let printed: Value = serde_json::from_slice(&ok(&out, "berth search")).unwrap();
    assert_eq!(printed["hits"][0]["version"]["digest"], digest(&transform));
    let out = berth_in(dir.path(), &["info", "aisopsflow/http-probe", "--server", url]);
    let text = String::from_utf8(ok(&out, "berth info")).unwrap();
    assert!(text.contains(&digest(&probe)), "{text}");

    // Stop the server; rebuild from its store alone into another directory; compare.
    server.kill9();
    let rebuilt = dir.path().join("rebuilt-index");
    let out = berth_in(
        dir.path(),
        &[
            "index",
            "rebuild",
            "--data-dir",
            data.to_str().unwrap(),
            "--index",
            rebuilt.to_str().unwrap(),
            "--key",
            "publisher.pub",
            "--host",
            &host,
        ],
    );
    let text = String::from_utf8(ok(&out, "index rebuild")).unwrap();
    assert!(text.contains("indexed 2 plugin versions"), "{text}");
    let kept = CatalogIndex::open(&data.join("index")).unwrap();
    let fresh = CatalogIndex::open(&rebuilt).unwrap();
    for text in ["", "transform", "probe", "serde", "ureq", "json-tr", "http"] {
        let q = SearchQuery { text: text.to_string(), latest_only: true, ..SearchQuery::default() };
        let (a, b) = (kept.search(&q).unwrap(), fresh.search(&q).unwrap());
        assert_eq!(digests(&a), digests(&b), "query {text:?}");
        assert_eq!(a.facets, b.facets, "query {text:?}");
        let versions =
            |r: &berth::catalog::index::SearchResults| r.hits.iter().map(|h| h.version.clone()).collect::<Vec<_>>();
        assert_eq!(versions(&a), versions(&b), "query {text:?}: documents differ");
    }
}
