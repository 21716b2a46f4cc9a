//! `GET /openapi.json`: the HTTP API's OpenAPI 3 document, a static file
//! (`openapi.json` beside this one) written by hand and checked against the
//! router by the test below: every route in `http.rs` and `http/*.rs` is a
//! documented path with the same methods, and every documented path is a
//! route. A new route is one more entry in the document.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub(super) const DOCUMENT: &str = include_str!("openapi.json");

/// Serves [`DOCUMENT`].
pub(super) async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Methods per path, as axum routes name them.
    type Routes = BTreeMap<String, BTreeSet<String>>;

    /// The text inside the parentheses that open at `open`.
    fn balanced(s: &str, open: usize) -> Option<&str> {
        let mut depth = 0usize;
        let mut in_str = false;
        for (i, c) in s[open..].char_indices() {
            match c {
                '"' => in_str = !in_str,
                '(' if !in_str => depth += 1,
                ')' if !in_str => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(&s[open + 1..open + i]);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Every route call (`route("path", method(handler)...)` after a dot)
    /// in `src`, with axum's `{*rest}` wildcard written as OpenAPI's
    /// `{rest}`. The needle is spelled apart so this file holds no route.
    fn routes_in(src: &str, into: &mut Routes) {
        const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];
        let needle = concat!(".rou", "te(");
        let mut at = 0;
        while let Some(i) = src[at..].find(needle) {
            let open = at + i + needle.len() - 1;
            let inner =
                balanced(src, open).unwrap_or_else(|| panic!("unbalanced route call at {open}"));
            at = open + inner.len();
            let Some(q1) = inner.find('"') else { continue };
            let Some(q2) = inner[q1 + 1..].find('"') else {
                continue;
            };
            let path = inner[q1 + 1..q1 + 1 + q2].replace("{*", "{");
            let handlers = &inner[q1 + 2 + q2..];
            let methods = into.entry(path).or_default();
            // `get(h)`, `.put(h)`, `axum::routing::patch(h)`: a method
            // name right before `(`, not part of a longer identifier.
            for (j, _) in handlers.match_indices('(') {
                let before = &handlers[..j];
                let word_start = before
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(0, |k| k + 1);
                let word = &before[word_start..];
                if METHODS.contains(&word) {
                    methods.insert(word.to_owned());
                }
            }
        }
    }

    fn router_routes() -> Routes {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gateway");
        let mut files = vec![dir.join("http.rs")];
        let mut more: Vec<_> = std::fs::read_dir(dir.join("http"))
            .unwrap_or_else(|e| panic!("src/gateway/http: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
        more.sort();
        files.extend(more);
        let mut routes = Routes::new();
        for f in files {
            let src =
                std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            routes_in(&src, &mut routes);
        }
        routes
    }

    fn documented() -> Routes {
        let doc: serde_json::Value =
            serde_json::from_str(DOCUMENT).unwrap_or_else(|e| panic!("openapi.json: {e}"));
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "not an OpenAPI 3 document"
        );
        let paths = doc["paths"]
            .as_object()
            .unwrap_or_else(|| panic!("openapi.json has no paths"));
        paths
            .iter()
            .map(|(p, item)| {
                let methods = item
                    .as_object()
                    .map(|o| {
                        o.keys()
                            .filter(|k| {
                                *k != "parameters" && *k != "summary" && *k != "description"
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                (p.clone(), methods)
            })
            .collect()
    }

    #[test]
    fn the_route_parser_reads_every_form() {
        let mut r = Routes::new();
        let src = r#"Router::new().ROUTE("/", get(console))
                .ROUTE(
                    "/kv/{*key}",
                    get(get_kv).put(put_kv).post(put_kv).delete(delete_kv),
                )
                .ROUTE("/a/{name}", axum::routing::patch(m::alter).delete(m::drop))
                .ROUTE("/x", post(budget_get(1)))"#;
        routes_in(&src.replace("ROUTE", "route"), &mut r);
        let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(r["/"], set(&["get"]));
        assert_eq!(r["/kv/{key}"], set(&["get", "put", "post", "delete"]));
        assert_eq!(r["/a/{name}"], set(&["patch", "delete"]));
        assert_eq!(r["/x"], set(&["post"]));
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn every_route_is_documented_and_every_documented_path_is_a_route() {
        let routes = router_routes();
        assert!(routes.contains_key("/kv/{key}") && routes.contains_key("/openapi.json"));
        let doc = documented();
        let undocumented: Vec<_> = routes
            .iter()
            .filter(|(p, m)| doc.get(*p) != Some(m))
            .collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json or with other methods there: {undocumented:?}\n(documented: {doc:?})"
        );
        let unrouted: Vec<_> = doc.keys().filter(|p| !routes.contains_key(*p)).collect();
        assert!(
            unrouted.is_empty(),
            "documented paths with no route: {unrouted:?}"
        );
    }

    #[test]
    fn every_operation_has_responses_and_every_ref_resolves() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap_or_default();
        let mut refs = Vec::new();
        fn walk(v: &serde_json::Value, refs: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(r) = o.get("$ref").and_then(|r| r.as_str()) {
                        refs.push(r.to_owned());
                    }
                    o.values().for_each(|v| walk(v, refs));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        walk(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external $ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                if method == "parameters" {
                    continue;
                }
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path} has no responses"
                );
                assert!(
                    op["operationId"].is_string(),
                    "{method} {path} has no operationId"
                );
            }
        }
    }
}
