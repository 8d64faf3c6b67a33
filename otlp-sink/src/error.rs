//! Errors of this crate.

/// Why a [`crate::Sink`] could not start or a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Binding or configuring the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address that was asked for.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The tokio runtime or the server thread could not be created.
    #[error("cannot start the server runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The TLS identity was rejected.
    #[error("invalid TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The server failed while running.
    #[error("the server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// The server thread panicked.
    #[error("the server thread panicked")]
    Panicked,
    /// Generating a self-signed certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}
