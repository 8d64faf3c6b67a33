//! Where profiles go: `--collection-agent`, or the standard OTLP environment variables.

use std::{path::Path, time::Duration};

use anyhow::{bail, Context, Result};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use super::Signal;

/// A resolved collector endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://host:port` or `https://host:port`.
    pub uri: String,
    /// The host name, checked against the server's certificate.
    pub host: String,
    /// Whether to use TLS.
    pub tls: bool,
}

/// The endpoint of signal `S`: `--collection-agent` and the signal's own variable
/// (`OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT`, ...), in the order [`Signal::VARIABLE_FIRST`]
/// says, else `OTEL_EXPORTER_OTLP_ENDPOINT`; `None` when none is set (local output only). A
/// bare `host:port` uses TLS unless `disable_tls`; a URL's scheme decides (`http` is
/// plaintext).
pub fn resolve<S: Signal>(flag: Option<&str>, disable_tls: bool) -> Result<Option<Endpoint>> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let flag = flag.map(str::to_owned);
    let first = if S::VARIABLE_FIRST { env(S::ENDPOINT_VARIABLE).or(flag) } else { flag.or_else(|| env(S::ENDPOINT_VARIABLE)) };
    let Some(value) = first.or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")) else {
        return Ok(None);
    };
    parse(value.trim(), disable_tls).map(Some)
}

fn parse(value: &str, disable_tls: bool) -> Result<Endpoint> {
    let (tls, rest) = match value.split_once("://") {
        Some(("https", rest)) => (!disable_tls, rest),
        Some(("http", rest)) => (false, rest),
        Some((scheme, _)) => bail!("collector endpoint {value:?}: unsupported scheme {scheme:?} (use host:port, http:// or https://)"),
        None => (!disable_tls, value),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, _port) = authority
        .rsplit_once(':')
        .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        .with_context(|| format!("collector endpoint {value:?} must be HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let scheme = if tls { "https" } else { "http" };
    Ok(Endpoint { uri: format!("{scheme}://{authority}"), host, tls })
}

/// A gRPC channel to the endpoint that connects on first use (and reconnects after failures).
pub fn channel(endpoint: &Endpoint, extra_ca: Option<&Path>) -> Result<Channel> {
    let mut builder = tonic::transport::Endpoint::from_shared(endpoint.uri.clone())
        .with_context(|| format!("invalid collector endpoint {}", endpoint.uri))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .tcp_nodelay(true);
    if endpoint.tls {
        let mut tls = ClientTlsConfig::new().domain_name(endpoint.host.clone()).with_native_roots();
        if let Some(path) = extra_ca {
            let pem = std::fs::read(path).with_context(|| format!("cannot read --tls-ca-file {}", path.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        builder = builder.tls_config(tls).context("invalid TLS configuration")?;
    } else if extra_ca.is_some() {
        bail!("--tls-ca-file needs TLS, but the endpoint is plaintext (--disable-tls or http://)");
    }
    Ok(builder.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let e = parse("127.0.0.1:11000", true).unwrap();
        assert_eq!((e.uri.as_str(), e.host.as_str(), e.tls), ("http://127.0.0.1:11000", "127.0.0.1", false));
        let e = parse("collector.example:4317", false).unwrap();
        assert_eq!((e.uri.as_str(), e.tls), ("https://collector.example:4317", true));
        let e = parse("http://localhost:4317/v1/profiles", false).unwrap();
        assert_eq!((e.uri.as_str(), e.tls), ("http://localhost:4317", false));
        let e = parse("https://[::1]:4317", false).unwrap();
        assert_eq!((e.host.as_str(), e.tls), ("::1", true));
        assert!(parse("localhost", false).is_err());
        assert!(parse("ftp://x:1", false).is_err());
    }
}
