//! One mapping of errors to what clients see: plugin error kinds and source failures to gRPC
//! statuses, gRPC codes to HTTP statuses and their proto names, the REST/JSON error body, and the
//! `ResumeInfo` a status carries in its details. gRPC, REST, gRPC-web, auth and metrics all use it.

use axum::body::Body;
use tonic::{Code, Status};
use tributary_plugin_api::ErrorKind;
use tributary_proto::v1 as pb;
use tributary_runtime::{
    call::{FailureKind, Fault},
    merge::Failure,
};

/// How a request is framed, by its content type: the one test gRPC, gRPC-web, REST, auth and
/// metrics share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `application/grpc`, `application/grpc+proto`, ...
    Grpc,
    /// `application/grpc-web`, `application/grpc-web-text`, and their `+proto` forms.
    GrpcWeb,
    /// Anything else: REST, the web page, the probes.
    Http,
}

impl Framing {
    /// The framing of a request with these headers.
    pub fn of(headers: &http::HeaderMap) -> Framing {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("application/grpc-web") {
            Framing::GrpcWeb
        } else if content_type.starts_with("application/grpc") {
            Framing::Grpc
        } else {
            Framing::Http
        }
    }

    /// gRPC or gRPC-web: a caller that expects its errors as gRPC statuses.
    pub fn is_grpc(self) -> bool {
        self != Framing::Http
    }
}

/// The HTTP status of a gRPC code (the `google.rpc.Code` mapping).
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => S::BAD_REQUEST,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::Cancelled => S::from_u16(499).expect("499 is a valid status"),
        Code::Unknown | Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
    }
}

/// The proto name of a gRPC code: `INVALID_ARGUMENT`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A JSON response; the gRPC code rides along as a response extension for the metrics layer.
pub fn json(status: http::StatusCode, code: Code, body: Vec<u8>) -> http::Response<Body> {
    let mut response = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("a valid response");
    response.extensions_mut().insert(code);
    response
}

/// The error body for `status`.
pub fn error_response(status: &tonic::Status) -> http::Response<Body> {
    let http = http_status(status.code());
    let mut body = serde_json::json!({
        "code": code_name(status.code()),
        "status": http.as_u16(),
        "message": status.message(),
    });
    // A listing that could not go on says where to resume (see `tributary.v1.ResumeInfo`).
    if let Some(info) = resume_info(status) {
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&info) {
            body.as_object_mut().expect("an object").extend(fields);
        }
    }
    json(http, status.code(), body.to_string().into_bytes())
}

/// One place for plugin error kinds to gRPC codes.
pub fn code_for(kind: ErrorKind) -> tonic::Code {
    match kind {
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::Unavailable
        | ErrorKind::InvalidConfig
        | ErrorKind::Crashed
        | ErrorKind::Starting => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}

/// The code of a call to one source that failed (a detail request): the plugin's own error kind,
/// INTERNAL for a broken contract, DEADLINE_EXCEEDED for a timeout, UNAVAILABLE when no call was
/// made.
pub fn fault_code(fault: &Fault) -> Code {
    match fault.kind {
        FailureKind::Plugin(kind) => code_for(kind),
        FailureKind::Contract => Code::Internal,
        FailureKind::Timeout => Code::DeadlineExceeded,
        FailureKind::Unhealthy | FailureKind::Overloaded => Code::Unavailable,
    }
}

/// A source failure that fails a whole list request (under `on_source_error = "fail"`): the
/// source, not the request, is at fault, so UNAVAILABLE whatever the kind.
pub fn failure_status(failure: &Failure) -> Status {
    Status::unavailable(failure.to_string())
}

/// `google.rpc.Status`: what gRPC carries in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<RpcAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// The type URL of [`pb::ResumeInfo`] in a status's details.
pub const RESUME_INFO_TYPE_URL: &str = "type.googleapis.com/tributary.v1.ResumeInfo";

/// UNAVAILABLE with `info` in its details: no source that still had items could answer.
pub fn unavailable_with_resume(message: String, info: pb::ResumeInfo) -> Status {
    let details = RpcStatus {
        code: tonic::Code::Unavailable as i32,
        message: message.clone(),
        details: vec![RpcAny {
            type_url: RESUME_INFO_TYPE_URL.to_owned(),
            value: prost::Message::encode_to_vec(&info),
        }],
    };
    Status::with_details(
        tonic::Code::Unavailable,
        message,
        prost::Message::encode_to_vec(&details).into(),
    )
}

/// The [`pb::ResumeInfo`] in a status's details, if it carries one.
pub fn resume_info(status: &Status) -> Option<pb::ResumeInfo> {
    let details: RpcStatus = prost::Message::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .find(|any| any.type_url == RESUME_INFO_TYPE_URL)
        .and_then(|any| prost::Message::decode(any.value.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http_statuses() {
        assert_eq!(http_status(Code::InvalidArgument), 400);
        assert_eq!(http_status(Code::Unauthenticated), 401);
        assert_eq!(http_status(Code::PermissionDenied), 403);
        assert_eq!(http_status(Code::NotFound), 404);
        assert_eq!(http_status(Code::Aborted), 409);
        assert_eq!(http_status(Code::ResourceExhausted), 429);
        assert_eq!(http_status(Code::Cancelled), 499);
        assert_eq!(http_status(Code::Internal), 500);
        assert_eq!(http_status(Code::Unimplemented), 501);
        assert_eq!(http_status(Code::Unavailable), 503);
        assert_eq!(http_status(Code::DeadlineExceeded), 504);
    }
}
