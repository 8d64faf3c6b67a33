//! End-to-end tests of the sink with a real tonic client over loopback.

use std::time::Duration;

use otlp_sink::proto::collector::profiles::v1development::{
    profiles_service_client::ProfilesServiceClient, ExportProfilesServiceRequest,
};
use otlp_sink::{fixtures, self_signed, Reply, Retention, Sink, SinkConfig};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const WAIT: Duration = Duration::from_secs(10);

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}

async fn connect(url: String, tls: Option<&str>) -> ProfilesServiceClient<Channel> {
    let mut endpoint = Endpoint::from_shared(url)
        .expect("valid endpoint")
        .connect_timeout(WAIT);
    if let Some(ca_pem) = tls {
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca_pem))
                    .domain_name("localhost"),
            )
            .expect("client TLS config");
    }
    let channel = endpoint.connect().await.expect("connects");
    ProfilesServiceClient::new(channel)
}

#[test]
fn plaintext_script_and_recording() {
    let mut config = SinkConfig::localhost();
    config.script = vec![
        Reply::Status(tonic::Code::Unavailable),
        Reply::PartialSuccess {
            rejected: 2,
            message: "too old".into(),
        },
    ];
    let mut sink = Sink::start(config).expect("sink starts");
    let request = fixtures::valid_request();

    let rt = client_runtime();
    rt.block_on(async {
        let mut client = connect(sink.endpoint(false), None).await;
        let status = client
            .export(request.clone())
            .await
            .expect_err("first call is scripted to fail");
        assert_eq!(status.code(), tonic::Code::Unavailable);

        let partial = client
            .export(request.clone())
            .await
            .expect("second call is accepted")
            .into_inner()
            .partial_success
            .expect("partial success reported");
        assert_eq!(partial.rejected_profiles, 2);
        assert_eq!(partial.error_message, "too old");

        let ok = client
            .export(request.clone())
            .await
            .expect("third call is accepted");
        assert_eq!(ok.into_inner().partial_success, None);
    });

    assert!(sink.wait_for_requests(2, WAIT));
    assert!(!sink.wait_for_requests(3, Duration::from_millis(50)));
    assert_eq!(sink.attempts(), 3);
    assert_eq!(
        sink.replies(),
        vec![
            Reply::Status(tonic::Code::Unavailable),
            Reply::PartialSuccess {
                rejected: 2,
                message: "too old".into()
            },
            Reply::Ok,
        ]
    );
    assert_eq!(sink.requests(), vec![request.clone(), request.clone()]);
    let stats = sink.stats();
    assert_eq!((stats.attempts, stats.accepted, stats.samples), (3, 2, 6));
    assert_eq!(stats.connections, 1);
    // Three requests went over the wire, plus HTTP/2 framing.
    let payload = request.encoded_len() as u64;
    assert!(sink.bytes_received() > 3 * payload, "{stats:?}");
    assert!(sink.bytes_sent() > 0);

    drop(rt);
    sink.stop().expect("clean stop");
    sink.stop().expect("stop is idempotent");
    assert!(!sink.is_running());
    assert_eq!(sink.requests().len(), 2, "data stays readable after stop");
    assert!(
        std::net::TcpStream::connect(sink.addr()).is_err(),
        "listener closed after stop"
    );
}

#[test]
fn tls_with_self_signed_certificate() {
    let identity = self_signed("localhost").expect("certificate");
    let mut config = SinkConfig::localhost();
    config.tls = Some(identity.clone());
    let mut sink = Sink::start(config).expect("sink starts");
    let request = fixtures::valid_request();

    let rt = client_runtime();
    rt.block_on(async {
        let mut client = connect(sink.endpoint(true), Some(&identity.cert_pem)).await;
        client
            .export(request.clone())
            .await
            .expect("accepted over TLS");
    });
    assert!(sink.wait_for_requests(1, WAIT));
    assert_eq!(sink.requests(), vec![request.clone()]);
    // The handshake alone carries the client hello and finished messages.
    assert!(sink.bytes_received() > request.encoded_len() as u64 + 200);

    // A client that does not trust the certificate gets nowhere.
    rt.block_on(async {
        let other = self_signed("localhost").expect("certificate");
        let endpoint = Endpoint::from_shared(sink.endpoint(true))
            .expect("valid endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&other.cert_pem))
                    .domain_name("localhost"),
            )
            .expect("client TLS config");
        assert!(endpoint.connect().await.is_err());
    });
    drop(rt);
    sink.stop().expect("clean stop");
    assert_eq!(sink.attempts(), 1);
}

#[test]
fn gzip_requests_and_counts_only_retention() {
    let mut sink =
        Sink::start_with(SinkConfig::localhost(), Retention::CountsOnly).expect("sink starts");
    // A request that compresses well: many identical samples.
    let mut request: ExportProfilesServiceRequest = fixtures::valid_request();
    let profile = &mut request.resource_profiles[0].scope_profiles[0].profiles[0];
    let sample = profile.samples[0].clone();
    profile.samples = vec![sample; 2000];
    let raw = request.encoded_len() as u64;

    let rt = client_runtime();
    rt.block_on(async {
        let mut client = connect(sink.endpoint(false), None)
            .await
            .send_compressed(CompressionEncoding::Gzip);
        client.export(request.clone()).await.expect("gzip accepted");
    });
    assert!(sink.wait_for_requests(1, WAIT));
    assert!(sink.requests().is_empty());
    let stats = sink.stats();
    assert_eq!(stats.samples, 6000);
    assert!(stats.bytes_received > 0);
    assert!(
        stats.bytes_received < raw / 4,
        "gzip should shrink {raw} bytes: {stats:?}"
    );
    drop(rt);
    sink.stop().expect("clean stop");
}

#[test]
fn drop_stops_the_server() {
    let sink = Sink::start(SinkConfig::localhost()).expect("sink starts");
    let addr = sink.addr();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(sink);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn bad_listen_address_and_identity_are_errors() {
    let taken = Sink::start(SinkConfig::localhost()).expect("sink starts");
    assert!(Sink::start(SinkConfig::new(taken.addr())).is_err());

    let mut config = SinkConfig::localhost();
    config.tls = Some(otlp_sink::TlsIdentity {
        cert_pem: "not a certificate".into(),
        key_pem: "not a key".into(),
    });
    assert!(Sink::start(config).is_err());
}
