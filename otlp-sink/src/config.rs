//! What a [`crate::Sink`] listens on and how it answers.

use std::net::SocketAddr;

/// A server certificate and its private key, both PEM-encoded.
///
/// For a self-signed identity (see [`crate::self_signed`]) `cert_pem` is
/// also what a client trusts as its CA certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The certificate (chain), PEM.
    pub cert_pem: String,
    /// The private key of the certificate, PEM (PKCS#8).
    pub key_pem: String,
}

/// How the sink answers one `Export` call (of any of the three services).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Accept the request fully (response without `partial_success`).
    Ok,
    /// Accept the request but report a partial success.
    PartialSuccess {
        /// Reported number of rejected profiles, spans or data points.
        rejected: i64,
        /// Reported error message.
        message: String,
    },
    /// Fail the call with this gRPC status code; the request is not stored.
    Status(tonic::Code),
    /// Refused by the peer's rules ([`Peer`]): `InvalidArgument` with this
    /// message, as the peer would answer. Not stored.
    Refused(String),
}

impl Reply {
    /// Whether a request answered this way counts as accepted (and is stored).
    pub fn is_accepted(&self) -> bool {
        !matches!(self, Reply::Status(_) | Reply::Refused(_))
    }
}

/// Which real receiver a sink behaves like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Peer {
    /// A lenient OTLP receiver: every signal, anything well-formed.
    #[default]
    Any,
    /// devfiler 0.15: only the profiles service (traces and metrics get
    /// `UNIMPLEMENTED`), messages up to 16 MiB, and every profiles request
    /// checked by [`crate::devfiler::accepts`]; a request devfiler would
    /// refuse is refused whole with `InvalidArgument`, as devfiler does.
    Devfiler,
}

/// Configuration of a [`crate::Sink`].
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Address to listen on; port 0 picks a free port (see [`crate::Sink::addr`]).
    pub listen: SocketAddr,
    /// Serve TLS with this identity instead of plaintext.
    pub tls: Option<TlsIdentity>,
    /// The i-th profiles `Export` call is answered with `script[i]`; calls
    /// past the end of the script are answered with [`Reply::Ok`].
    pub script: Vec<Reply>,
    /// The same for the trace service, counted separately: the i-th trace
    /// `Export` call is answered with `trace_script[i]`. Empty (accept
    /// everything) by default.
    pub trace_script: Vec<Reply>,
    /// The same for the metrics service, counted separately. Empty (accept
    /// everything) by default.
    pub metrics_script: Vec<Reply>,
    /// The real receiver whose rules the sink enforces.
    pub peer: Peer,
}

impl SinkConfig {
    /// A plaintext sink on `listen` that accepts everything.
    pub fn new(listen: SocketAddr) -> Self {
        SinkConfig {
            listen,
            tls: None,
            script: Vec::new(),
            trace_script: Vec::new(),
            metrics_script: Vec::new(),
            peer: Peer::Any,
        }
    }

    /// A plaintext sink on 127.0.0.1 with a free port that accepts everything.
    pub fn localhost() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A sink on 127.0.0.1 with a free port that accepts and refuses
    /// exactly what devfiler 0.15 does ([`Peer::Devfiler`]).
    pub fn devfiler() -> Self {
        SinkConfig { peer: Peer::Devfiler, ..Self::localhost() }
    }
}
