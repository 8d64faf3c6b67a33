//! The gRPC `ProfilesService` implementation that answers from the script.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::profiles::v1development::{
    profiles_service_server::ProfilesService, ExportProfilesPartialSuccess,
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use tonic::{Request, Response, Status};

use crate::config::Reply;
use crate::recorder::Recorder;

/// Records each call and answers it as the script says.
pub(crate) struct SinkService {
    recorder: Arc<Recorder>,
}

impl SinkService {
    pub(crate) fn new(recorder: Arc<Recorder>) -> Self {
        SinkService { recorder }
    }
}

#[tonic::async_trait]
impl ProfilesService for SinkService {
    async fn export(
        &self,
        request: Request<ExportProfilesServiceRequest>,
    ) -> Result<Response<ExportProfilesServiceResponse>, Status> {
        match self.recorder.record(request.into_inner()) {
            Reply::Ok => Ok(Response::new(ExportProfilesServiceResponse {
                partial_success: None,
            })),
            Reply::PartialSuccess { rejected, message } => {
                Ok(Response::new(ExportProfilesServiceResponse {
                    partial_success: Some(ExportProfilesPartialSuccess {
                        rejected_profiles: rejected,
                        error_message: message,
                    }),
                }))
            }
            Reply::Status(code) => Err(Status::new(code, "otlp-sink: scripted failure")),
        }
    }
}
