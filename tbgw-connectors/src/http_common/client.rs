//! A small HTTP/1.1 client on hyper's connection API: http and https (rustls), keep-alive
//! connections reused per origin, redirects, basic authentication and a deadline per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tbgw::connector::TaskSpawner;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

use super::tls::{client_config, ClientTls};

/// Largest response body read (16 MiB); a bigger one fails the request.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;
/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;
/// Idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 8;

/// Why an HTTP request failed before a response arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server could not be reached (connection refused, DNS, TLS handshake).
    #[error("cannot connect to {origin}: {reason}")]
    Connect {
        /// `scheme://host:port`.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The connection failed before any response arrived (reset, closed, or a TLS alert such
    /// as a refused client certificate under TLS 1.3).
    #[error("no response from {origin}: {reason}")]
    NoResponse {
        /// `scheme://host:port`.
        origin: String,
        /// Why.
        reason: String,
    },
    /// No complete response within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The connection broke or the response was not valid HTTP.
    #[error("HTTP exchange failed: {0}")]
    Protocol(String),
    /// More than 10 redirects.
    #[error("too many redirects")]
    TooManyRedirects,
}

impl HttpError {
    /// True when no answer came from the server (so the device counts as unreachable).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            HttpError::Connect { .. } | HttpError::InvalidUrl { .. } | HttpError::NoResponse { .. }
        )
    }
}

/// One outgoing request.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Bytes,
    /// Deadline for the whole exchange, redirects included.
    pub timeout: Duration,
    /// Follow 301/302/303/307/308.
    pub follow_redirects: bool,
    /// TLS options for https URLs.
    pub tls: ClientTls,
    /// Basic authentication: user name and password.
    pub basic: Option<(String, String)>,
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    https: bool,
    host: String,
    port: u16,
    tls: ClientTls,
}

/// The client. Cheap to share (`Arc`); keeps idle keep-alive connections per origin.
/// Each connection is driven by a sub-task of the connector run given to
/// [`HttpClient::attach`].
#[derive(Debug, Default)]
pub struct HttpClient {
    idle: Mutex<HashMap<PoolKey, Vec<SendRequest<Full<Bytes>>>>>,
    tls: Mutex<HashMap<ClientTls, Arc<tokio_rustls::rustls::ClientConfig>>>,
    tasks: Mutex<Option<TaskSpawner>>,
}

struct Target {
    key: PoolKey,
    uri: Uri,
}

fn parse_target(url: &str, tls: &ClientTls) -> Result<Target, HttpError> {
    let bad = |reason: &str| HttpError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(_) => return Err(bad("the scheme must be http or https")),
        None => return Err(bad("the URL must start with http:// or https://")),
    };
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Target {
        key: PoolKey {
            https,
            host,
            port,
            tls: if https {
                tls.clone()
            } else {
                ClientTls::default()
            },
        },
        uri,
    })
}

/// Resolves a `Location` header against the URL that answered.
fn resolve_location(base: &Uri, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    if location.starts_with("//") {
        return format!("{scheme}:{location}");
    }
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map(|i| i + 1).unwrap_or(0)];
    format!("{scheme}://{authority}{dir}{location}")
}

impl HttpClient {
    /// A client without connections.
    pub fn new() -> Self {
        HttpClient::default()
    }

    /// Runs the client's connections as sub-tasks of this connector run; call at the start
    /// of every run. Idle connections of an earlier run (whose tasks ended with it) are
    /// dropped. Until attached, requests fail with [`HttpError::Connect`].
    pub fn attach(&self, tasks: TaskSpawner) {
        *self.tasks.lock().unwrap_or_else(|p| p.into_inner()) = Some(tasks);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Sends `req`, following redirects when asked, within `req.timeout`.
    pub async fn send(&self, req: &Outbound) -> Result<Reply, HttpError> {
        match tokio::time::timeout(req.timeout, self.send_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(req.timeout)),
        }
    }

    async fn send_inner(&self, req: &Outbound) -> Result<Reply, HttpError> {
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        for _ in 0..=MAX_REDIRECTS {
            let target = parse_target(&url, &req.tls)?;
            let (status, location, reply) = self.exchange(&target, &method, req, &body).await?;
            let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            match (redirect && req.follow_redirects, location) {
                (true, Some(loc)) => {
                    url = resolve_location(&target.uri, &loc);
                    if status.as_u16() == 303
                        || (matches!(status.as_u16(), 301 | 302) && method == Method::POST)
                    {
                        method = Method::GET;
                        body = Bytes::new();
                    }
                }
                _ => return Ok(reply),
            }
        }
        Err(HttpError::TooManyRedirects)
    }

    async fn exchange(
        &self,
        target: &Target,
        method: &Method,
        req: &Outbound,
        body: &Bytes,
    ) -> Result<(StatusCode, Option<String>, Reply), HttpError> {
        let (mut sender, reused) = match self.take_idle(&target.key) {
            Some(s) => (s, true),
            None => (self.connect(&target.key).await?, false),
        };
        let path: Uri = target
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| HttpError::Protocol(e.to_string()))?;
        let default_port = if target.key.https { 443 } else { 80 };
        let host_header = if target.key.port == default_port {
            target.uri.host().unwrap_or("").to_string()
        } else {
            format!("{}:{}", target.uri.host().unwrap_or(""), target.key.port)
        };
        let mut headers = hyper::HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&host_header) {
            headers.insert(hyper::header::HOST, v);
        }
        for (k, v) in &req.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) else {
                return Err(HttpError::Protocol(format!("invalid header {k}: {v:?}")));
            };
            headers.append(name, value);
        }
        if let Some((u, p)) = &req.basic {
            if let Ok(v) = HeaderValue::from_str(&super::auth::basic_header(u, p)) {
                headers.insert(hyper::header::AUTHORIZATION, v);
            }
        }
        if !body.is_empty() && !headers.contains_key(hyper::header::CONTENT_TYPE) {
            headers.insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let make = || {
            let mut r = Request::new(Full::new(body.clone()));
            *r.method_mut() = method.clone();
            *r.uri_mut() = path.clone();
            *r.headers_mut() = headers.clone();
            r
        };
        let response = match sender.send_request(make()).await {
            Ok(r) => r,
            // An idle connection the server closed meanwhile: once more on a new one.
            Err(e) if reused && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) => {
                sender = self.connect(&target.key).await?;
                sender
                    .send_request(make())
                    .await
                    .map_err(|e| no_response(&target.key, &e))?
            }
            Err(e) => return Err(no_response(&target.key, &e)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let keep = !headers
            .get(hyper::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
            .map_err(|e| HttpError::Protocol(format!("reading the body: {e}")))?
            .to_bytes();
        if keep {
            self.put_back(target.key.clone(), sender);
        }
        let location = headers
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((
            status,
            location,
            Reply {
                status,
                content_type,
                body: bytes,
            },
        ))
    }

    fn put_back(&self, key: PoolKey, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(key).or_default();
            if list.len() < MAX_IDLE_PER_ORIGIN {
                list.push(sender);
            }
        }
    }

    fn take_idle(&self, key: &PoolKey) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() && s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn tls_config(
        &self,
        opts: &ClientTls,
    ) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, String> {
        if let Ok(cache) = self.tls.lock() {
            if let Some(c) = cache.get(opts) {
                return Ok(c.clone());
            }
        }
        let cfg = client_config(opts)?;
        if let Ok(mut cache) = self.tls.lock() {
            cache.insert(opts.clone(), cfg.clone());
        }
        Ok(cfg)
    }

    async fn handshake<T>(&self, io: T) -> Result<SendRequest<Full<Bytes>>, String>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("the HTTP client is not attached to a connector run")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        // The connection task ends when the connection closes or the sender is dropped.
        tasks.spawn("HTTP client connection", async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP client connection ended with an error.");
            }
            Ok(())
        });
        Ok(sender)
    }

    async fn connect(&self, key: &PoolKey) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let origin = origin(key);
        let connect_err = |reason: String| HttpError::Connect {
            origin: origin.clone(),
            reason,
        };
        let tcp = TcpStream::connect((key.host.as_str(), key.port))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if key.https {
            let cfg = self.tls_config(&key.tls).map_err(connect_err)?;
            let name = ServerName::try_from(key.host.clone())
                .map_err(|e| connect_err(format!("invalid server name: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| connect_err(format!("TLS handshake failed: {e}")))?;
            self.handshake(TokioIo::new(tls)).await.map_err(connect_err)
        } else {
            self.handshake(TokioIo::new(tcp)).await.map_err(connect_err)
        }
    }
}

fn origin(key: &PoolKey) -> String {
    format!(
        "{}://{}:{}",
        if key.https { "https" } else { "http" },
        key.host,
        key.port
    )
}

/// A failure of `send_request`: the connection broke before a response.
fn no_response(key: &PoolKey, e: &hyper::Error) -> HttpError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    HttpError::NoResponse {
        origin: origin(key),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_answering_url() {
        let base: Uri = "http://h:1/a/b?x=1".parse().unwrap();
        assert_eq!(resolve_location(&base, "/c"), "http://h:1/c");
        assert_eq!(resolve_location(&base, "c"), "http://h:1/a/c");
        assert_eq!(resolve_location(&base, "https://o/p"), "https://o/p");
        assert_eq!(resolve_location(&base, "//o/p"), "http://o/p");
    }

    #[test]
    fn targets_need_an_http_scheme() {
        assert!(parse_target("ftp://x/", &ClientTls::default()).is_err());
        assert!(parse_target("x/y", &ClientTls::default()).is_err());
        let t = parse_target("https://[::1]/p", &ClientTls::default()).unwrap();
        assert_eq!((t.key.host.as_str(), t.key.port), ("::1", 443));
    }
}
