//! Asks the node's container runtime for a container's Kubernetes labels, over its gRPC socket
//! (what the kubelet's `--container-runtime-endpoint` names).
//!
//! Two APIs, tried in order for each container:
//! - containerd's own `containerd.services.containers.v1.Containers/Get` in namespace `k8s.io`,
//!   the namespace the kubelet's containers live in: it returns the container's labels, which
//!   carry the kubelet's `io.kubernetes.*` (and `ctr --label` gives a container the same);
//! - the CRI's `runtime.v1.RuntimeService/ContainerStatus`, which CRI-O (and containerd's CRI
//!   plugin) serve, with the same labels.
//!
//! Only the few message fields read are declared (field numbers from the APIs' `.proto`
//! files); prost skips the rest.

use std::{collections::HashMap, time::Duration};

use tonic::{
    codegen::http::uri::PathAndQuery,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
    Code, Request,
};
use tonic_prost::ProstCodec;

/// The label the kubelet puts the pod's name in.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// The pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// The pod's UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// The container's name in the pod spec.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// The containerd namespace the kubelet's containers are in.
const KUBERNETES_NAMESPACE: &str = "k8s.io";
/// The gRPC header containerd takes the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// How long one call may take: a slow runtime delays only the metadata, never sampling.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, PartialEq, prost::Message)]
struct GetContainerRequest {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    container: Option<ContainerdContainer>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerdContainer {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(map = "string, string", tag = "2")]
    labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatusRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(bool, tag = "2")]
    verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatusResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<CriContainerStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CriContainerStatus {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(map = "string, string", tag = "12")]
    labels: HashMap<String, String>,
}

/// Why a container's labels could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The endpoint is not a `unix://` path or URL tonic takes.
    #[error("container runtime endpoint {endpoint}: {source}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// tonic's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// No runtime answers at the endpoint.
    #[error("container runtime at {endpoint} unreachable: {source}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// tonic's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// The runtime does not know the container (it is not one of its, or it is gone).
    #[error("the container runtime does not know container {0}")]
    NotFound(String),
    /// The runtime did not answer in time.
    #[error("the container runtime did not answer for container {0} in time")]
    TimedOut(String),
    /// The runtime answered with an error.
    #[error("container runtime call {call} failed: {status}")]
    Call {
        /// The method.
        call: &'static str,
        /// Its status.
        status: Box<tonic::Status>,
    },
}

/// A connection to one container runtime.
pub struct RuntimeClient {
    endpoint: String,
    channel: Channel,
}

impl RuntimeClient {
    /// Connects to `endpoint` (`unix:///run/containerd/containerd.sock` or a path).
    pub async fn connect(endpoint: &str) -> Result<Self, RuntimeError> {
        let uri = if endpoint.starts_with('/') { format!("unix://{endpoint}") } else { endpoint.to_owned() };
        let config = Endpoint::from_shared(uri).map_err(|source| RuntimeError::Endpoint { endpoint: endpoint.to_owned(), source })?;
        let channel = config
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .map_err(|source| RuntimeError::Unreachable { endpoint: endpoint.to_owned(), source })?;
        Ok(RuntimeClient { endpoint: endpoint.to_owned(), channel })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The labels of container `id`: containerd's API first, then the CRI's.
    pub async fn labels(&self, id: &str) -> Result<HashMap<String, String>, RuntimeError> {
        match self.containerd_labels(id).await {
            Ok(labels) => Ok(labels),
            Err(RuntimeError::Call { status, .. }) if status.code() == Code::Unimplemented => self.cri_labels(id).await,
            Err(RuntimeError::NotFound(_)) => self.cri_labels(id).await,
            Err(other) => Err(other),
        }
    }

    async fn containerd_labels(&self, id: &str) -> Result<HashMap<String, String>, RuntimeError> {
        const CALL: &str = "/containerd.services.containers.v1.Containers/Get";
        let mut request = Request::new(GetContainerRequest { id: id.to_owned() });
        request.metadata_mut().insert(NAMESPACE_HEADER, MetadataValue::from_static(KUBERNETES_NAMESPACE));
        let response: GetContainerResponse = self.unary(CALL, request, id).await?;
        Ok(response.container.map(|c| c.labels).unwrap_or_default())
    }

    async fn cri_labels(&self, id: &str) -> Result<HashMap<String, String>, RuntimeError> {
        const CALL: &str = "/runtime.v1.RuntimeService/ContainerStatus";
        let request = Request::new(ContainerStatusRequest { container_id: id.to_owned(), verbose: false });
        let response: ContainerStatusResponse = self.unary(CALL, request, id).await?;
        Ok(response.status.map(|s| s.labels).unwrap_or_default())
    }

    async fn unary<Q, R>(&self, call: &'static str, request: Request<Q>, id: &str) -> Result<R, RuntimeError>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let status = |status| RuntimeError::Call { call, status: Box::new(status) };
        grpc.ready().await.map_err(|e| status(tonic::Status::unavailable(e.to_string())))?;
        match grpc.unary(request, PathAndQuery::from_static(call), ProstCodec::<Q, R>::default()).await {
            Ok(response) => Ok(response.into_inner()),
            Err(s) if s.code() == Code::NotFound => Err(RuntimeError::NotFound(id.to_owned())),
            Err(s) => Err(status(s)),
        }
    }
}
