//! The gRPC `ProfilesService`, `TraceService` and `MetricsService`
//! implementations that answer from the script.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_server::MetricsService, ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    profiles_service_server::ProfilesService, ExportProfilesPartialSuccess,
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::TraceService, ExportTracePartialSuccess, ExportTraceServiceRequest,
    ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use crate::config::Reply;
use crate::recorder::Recorder;

/// Records each call of one signal and answers it as that signal's script says.
pub(crate) struct SinkService<R> {
    recorder: Arc<Recorder<R>>,
}

impl<R: Clone> SinkService<R> {
    pub(crate) fn new(recorder: Arc<Recorder<R>>) -> Self {
        SinkService { recorder }
    }

    /// Records `request` and builds the response: `respond` gets
    /// `(rejected, message)` for a partial success, `None` for a full one.
    fn answer<T>(
        &self,
        request: Request<R>,
        respond: impl FnOnce(Option<(i64, String)>) -> T,
    ) -> Result<Response<T>, Status> {
        match self.recorder.record(request.into_inner()) {
            Reply::Ok => Ok(Response::new(respond(None))),
            Reply::PartialSuccess { rejected, message } => {
                Ok(Response::new(respond(Some((rejected, message)))))
            }
            Reply::Status(code) => Err(Status::new(code, "otlp-sink: scripted failure")),
            Reply::Refused(why) => Err(Status::invalid_argument(why)),
        }
    }
}

#[tonic::async_trait]
impl ProfilesService for SinkService<ExportProfilesServiceRequest> {
    async fn export(
        &self,
        request: Request<ExportProfilesServiceRequest>,
    ) -> Result<Response<ExportProfilesServiceResponse>, Status> {
        self.answer(request, |partial| ExportProfilesServiceResponse {
            partial_success: partial.map(|(rejected, message)| ExportProfilesPartialSuccess {
                rejected_profiles: rejected,
                error_message: message,
            }),
        })
    }
}

#[tonic::async_trait]
impl TraceService for SinkService<ExportTraceServiceRequest> {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.answer(request, |partial| ExportTraceServiceResponse {
            partial_success: partial.map(|(rejected, message)| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: message,
            }),
        })
    }
}

#[tonic::async_trait]
impl MetricsService for SinkService<ExportMetricsServiceRequest> {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.answer(request, |partial| ExportMetricsServiceResponse {
            partial_success: partial.map(|(rejected, message)| ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message: message,
            }),
        })
    }
}
