//! The HTTP side of the symbol endpoint: `GET /<id[0:2]>/<id[2:4]>/<id>/metadata.json` and
//! `…/ranges`, where `id` is a file ID in unpadded base64url, as devfiler's `--symb-endpoint`
//! asks for them.
//!
//! - `metadata.json`: `{"version": 1, "symbolFileReferences": {"dwarfFileID": "<id>"}}` (the
//!   ranges are under the same ID), or 404 when the file has no symbols or is unknown: devfiler
//!   then records "no symbols" for it.
//! - `ranges`: the zstd-compressed symbfile.
//!
//! Anything else is refused before any work: paths longer than [`MAX_PATH_BYTES`] (414),
//! malformed paths (400), methods other than GET and HEAD (405), IDs no profiled process mapped
//! (404). A file that cannot be read right now answers 503, which devfiler retries later.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, CONTENT_TYPE},
    Method, Request, Response, StatusCode,
};
use symbolizer::file_id::FileId;
use tokio::net::TcpListener;
use tracing::{debug, info};

use super::ranges::{BuildError, RangesBuilder};
use crate::http_server::{self, method_not_allowed, text, Limits};

/// Longest path taken: a well-formed one is 47 bytes.
pub const MAX_PATH_BYTES: usize = 128;

/// The two documents of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// `metadata.json`.
    Metadata,
    /// `ranges`.
    Ranges,
}

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// Longer than [`MAX_PATH_BYTES`].
    TooLong,
    /// Not `/<xx>/<yy>/<id>/<document>` with a valid ID.
    Malformed,
}

/// Parses a request path. Leading slashes are collapsed: devfiler joins its endpoint URL and
/// the path with a `/`, so an endpoint given with a trailing slash yields `//`.
pub fn route(path: &str) -> Result<(FileId, Document), BadPath> {
    if path.len() > MAX_PATH_BYTES {
        return Err(BadPath::TooLong);
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [first, second, id, document] = parts[..] else { return Err(BadPath::Malformed) };
    let file_id = FileId::from_base64url(id).ok_or(BadPath::Malformed)?;
    if id.get(..2) != Some(first) || id.get(2..4) != Some(second) {
        return Err(BadPath::Malformed);
    }
    let document = match document {
        "metadata.json" => Document::Metadata,
        "ranges" => Document::Ranges,
        _ => return Err(BadPath::Malformed),
    };
    Ok((file_id, document))
}

/// Limits of the symbol endpoint: few connections (devfiler opens up to 16), and time to send
/// a large library's ranges.
fn limits() -> Limits {
    Limits { max_connections: 32, max_connection_lifetime: std::time::Duration::from_secs(120), max_head_bytes: 8 * 1024, ..Limits::default() }
}

/// Serves the files `builder` knows on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, builder: Arc<RangesBuilder>) {
    http_server::serve(listener, limits(), "symbol endpoint", move |req| respond(req, builder.clone())).await;
}

async fn respond(req: Request<Incoming>, builder: Arc<RangesBuilder>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed();
    }
    let (id, document) = match route(req.uri().path()) {
        Ok(routed) => routed,
        Err(BadPath::TooLong) => return text(StatusCode::URI_TOO_LONG, "path too long\n"),
        Err(BadPath::Malformed) => return text(StatusCode::BAD_REQUEST, "expected /<id[0:2]>/<id[2:4]>/<file id, base64url>/(metadata.json|ranges)\n"),
    };
    let built = match builder.get(id).await {
        Ok(built) => built,
        Err(BuildError::Unknown) => return text(StatusCode::NOT_FOUND, "no profiled process mapped a file with this ID\n"),
        Err(error @ BuildError::Invalid { .. }) => {
            debug!(file_id = %id, "no symbols to serve: {error}");
            return text(StatusCode::NOT_FOUND, format!("no symbols: {error}\n"));
        }
        Err(error @ BuildError::Gone { .. }) => {
            info!(file_id = %id, "cannot serve symbols: {error}");
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n"));
        }
    };
    match document {
        Document::Metadata if built.ranges == 0 => text(StatusCode::NOT_FOUND, "the file has no symbols\n"),
        Document::Metadata => {
            let body = format!("{{\"version\":1,\"symbolFileReferences\":{{\"dwarfFileID\":\"{}\"}}}}", id.to_base64url());
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Document::Ranges => {
            // The zstd is the document's own format, not an HTTP content encoding.
            let mut response = Response::new(Full::new(built.bytes.clone()));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_devfilers_paths_and_nothing_else() {
        let id = FileId(0xf4c1e5fe2f28034fcceb0776ec00b125);
        assert_eq!(route("/9M/Hl/9MHl_i8oA0_M6wd27ACxJQ/metadata.json"), Ok((id, Document::Metadata)));
        assert_eq!(route("//9M/Hl/9MHl_i8oA0_M6wd27ACxJQ/ranges"), Ok((id, Document::Ranges)));
        for bad in [
            "/",
            "/9M/Hl/9MHl_i8oA0_M6wd27ACxJQ",
            "/9M/Hx/9MHl_i8oA0_M6wd27ACxJQ/ranges",
            "/9M/Hl/9MHl_i8oA0_M6wd27ACxJQ/../../etc/passwd",
            "/9M/Hl/9MHl_i8oA0_M6wd27ACxJQ/ranges/",
            "/9M/Hl/9MHl_i8oA0_M6wd27ACxJR/ranges",
            "/9M/Hl/9MHl%2Fi8oA0_M6wd27ACxJQ/ranges",
            "/9M/Hl/9MHl_i8oA0_M6wd27ACxJQ/symbols.json",
        ] {
            assert_eq!(route(bad), Err(BadPath::Malformed), "{bad}");
        }
        assert_eq!(route(&format!("/{}", "a".repeat(200))), Err(BadPath::TooLong));
    }
}
