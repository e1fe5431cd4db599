//! The built-in web console, `GET /admin/ui`: one HTML page compiled into
//! the binary.
//!
//! The page (`console/index.html`) is self-contained — inline CSS and
//! JavaScript, no build step, nothing loaded from anywhere but the node
//! that served it. In the browser it polls this node's `/admin/members`,
//! `/admin/ring`, `/admin/hints`, `/admin/aae`, `/metrics` and `/stats`
//! about once a second, one poll at a time with every request bounded by a
//! timeout, and backs off while the node does not answer, keeping its last
//! answers on screen marked as stale. Request rates and latency quantiles
//! are computed in the browser from the change of the `/metrics` counters
//! and histogram between polls.
//!
//! It shows what this node sees: a member is suspect or dead *in this
//! node's view*. It is read-only: leaving and removing nodes stay with
//! `starling admin`, so a page open in a browser can change nothing.

use http::StatusCode;
use http_api::AdminResponse;

/// The page, as served.
pub const INDEX_HTML: &str = include_str!("console/index.html");

/// The answer to `GET /admin/ui`.
pub fn page() -> AdminResponse {
    AdminResponse {
        status: StatusCode::OK,
        content_type: "text/html; charset=utf-8".to_owned(),
        body: bytes::Bytes::from_static(INDEX_HTML.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_nothing_from_elsewhere() {
        // Operators run consoles on closed networks: a script, style sheet,
        // font or image from another host would leave the page broken.
        let lower = INDEX_HTML.to_ascii_lowercase();
        for banned in [
            " src=",
            "<link",
            "@import",
            "url(http",
            "url(//",
            "@font-face",
            "<iframe",
            "<img",
        ] {
            assert!(
                !lower.contains(banned),
                "the console page contains {banned:?}"
            );
        }
        // The only absolute URLs are the SVG namespace and links to the
        // other members' consoles, which the page builds from their
        // addresses.
        for (at, _) in lower.match_indices("http://") {
            let rest = &lower[at..];
            assert!(
                rest.starts_with("http://www.w3.org/2000/svg") || rest.starts_with("http://\" +"),
                "unexpected absolute URL at byte {at}: {}",
                &rest[..rest.len().min(60)]
            );
        }
        assert!(!lower.contains("https://"));
    }

    #[test]
    fn page_reads_only_this_nodes_endpoints() {
        for path in [
            "\"/admin/members\"",
            "\"/admin/ring\"",
            "\"/admin/hints\"",
            "\"/admin/aae\"",
            "\"/metrics\"",
            "\"/stats\"",
        ] {
            assert!(
                INDEX_HTML.contains(path),
                "the console does not poll {path}"
            );
        }
        let answer = page();
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.content_type.starts_with("text/html"));
    }

    #[test]
    fn page_has_the_elements_tests_read() {
        for id in [
            "id=\"members\"",
            "id=\"ring\"",
            "id=\"ring-legend\"",
            "id=\"hint-owners\"",
            "id=\"trees\"",
            "id=\"requests\"",
            "id=\"conn\"",
            "\"data-member-state\"",
            "\"data-ring-state\"",
        ] {
            assert!(INDEX_HTML.contains(id), "the console lacks {id}");
        }
    }
}
