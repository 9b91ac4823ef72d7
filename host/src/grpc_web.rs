//! gRPC-web beside plain HTTP/1.1 on one port.
//!
//! `tonic_web::GrpcWebLayer` translates gRPC-web to gRPC but answers 400 to every other HTTP/1.1
//! request, which would shut out REST clients. [`GrpcWebLayer`] hands only
//! gRPC-web requests (an `application/grpc-web*` content type) to tonic-web and every other request
//! straight to the inner service.
//!
//! A gRPC-web request body is read whole and checked before tonic-web sees it (gRPC-web has no
//! client streaming, and a request is at most [`crate::idle::MAX_REQUEST_BYTES`]): bad base64, a
//! compression flag other than 0, or a truncated message is the client's error, answered
//! INVALID_ARGUMENT naming what was wrong (tonic-web and tonic would answer INTERNAL); a body
//! that does not arrive in time keeps its DEADLINE_EXCEEDED ([`crate::idle`]).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::body::Body;

/// tonic-web for gRPC-web requests, nothing for the others.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcWebLayer;

impl<S: Clone> tower_layer::Layer<S> for GrpcWebLayer {
    type Service = GrpcWebService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcWebService {
            web: tower_layer::Layer::layer(&tonic_web::GrpcWebLayer::new(), inner.clone()),
            plain: inner,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcWebService<S> {
    web: tonic_web::GrpcWebService<S>,
    plain: S,
}

/// Whether `request` is gRPC-web (any of its four content types).
fn is_grpc_web<B>(request: &http::Request<B>) -> bool {
    crate::status::Framing::of(request.headers()) == crate::status::Framing::GrpcWeb
}

// tonic hands every layer an `http::Request<tonic::body::Body>`.
impl<S, ResBody> tower_service::Service<http::Request<Body>> for GrpcWebService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError> + std::fmt::Display,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.plain.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if is_grpc_web(&request) {
            // tonic-web's service calls its own copy of the inner service: make that one ready.
            let mut web = self.web.clone();
            Box::pin(async move {
                let request = if request.method() == http::Method::POST {
                    match checked(request).await {
                        Ok(request) => request,
                        Err(answer) => return Ok(answer),
                    }
                } else {
                    request
                };
                std::future::poll_fn(|cx| {
                    tower_service::Service::<http::Request<Body>>::poll_ready(&mut web, cx)
                })
                .await?;
                web.call(request).await
            })
        } else {
            let future = self.plain.call(request);
            Box::pin(async move { Ok(future.await?.map(Body::new)) })
        }
    }
}

/// The largest gRPC-web request body read: a request of [`crate::idle::MAX_REQUEST_BYTES`] in
/// base64 text, with room for its frame header.
const MAX_BODY_BYTES: usize = crate::idle::MAX_REQUEST_BYTES / 3 * 4 + 64;

/// Whether the gRPC-web content type says base64 text (tonic-web's rule: exactly these two).
fn is_text(headers: &http::HeaderMap) -> bool {
    matches!(
        headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/grpc-web-text" | "application/grpc-web-text+proto")
    )
}

/// `request` with its body read whole and checked, or the gRPC-web error answer to send instead.
async fn checked(
    request: http::Request<Body>,
) -> Result<http::Request<Body>, http::Response<Body>> {
    use http_body_util::BodyExt as _;
    let text = is_text(request.headers());
    let answer = |status: tonic::Status| {
        let code = status.code();
        let (mut parts, ()) = status.into_http::<()>().into_parts();
        parts.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(if text {
                "application/grpc-web-text+proto"
            } else {
                "application/grpc-web+proto"
            }),
        );
        let mut response = http::Response::from_parts(parts, Body::empty());
        response.extensions_mut().insert(code);
        response
    };
    let (parts, mut body) = request.into_parts();
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(&answer)?;
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
            if bytes.len() > MAX_BODY_BYTES {
                return Err(answer(tonic::Status::resource_exhausted(format!(
                    "the gRPC-web request body is larger than {MAX_BODY_BYTES} bytes"
                ))));
            }
        }
    }
    let bytes = bytes.freeze();
    check_messages(&bytes, text).map_err(|problem| {
        answer(tonic::Status::invalid_argument(format!(
            "malformed gRPC-web request: {problem}"
        )))
    })?;
    Ok(http::Request::from_parts(
        parts,
        Body::new(http_body_util::Full::new(bytes)),
    ))
}

/// Checks a gRPC-web request body: base64 in groups of four (each message may be encoded on its
/// own, padding and all) when `text`, then whole length-prefixed messages, each uncompressed.
fn check_messages(body: &[u8], text: bool) -> Result<(), String> {
    use base64::Engine as _;
    let decoded;
    let mut messages = body;
    if text {
        if !body.len().is_multiple_of(4) {
            return Err(format!(
                "the base64 body is {} characters long, not a multiple of 4",
                body.len()
            ));
        }
        let mut out = Vec::with_capacity(body.len() / 4 * 3);
        for (i, group) in body.chunks(4).enumerate() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(group)
                .map_err(|e| format!("invalid base64 at character {}: {e}", i * 4))?;
            out.extend_from_slice(&bytes);
        }
        decoded = out;
        messages = &decoded;
    }
    let mut offset = 0;
    let mut index = 0;
    while offset < messages.len() {
        let header = &messages[offset..];
        if header.len() < 5 {
            return Err(format!(
                "message {index} is truncated: {} bytes of its 5-byte header arrived",
                header.len()
            ));
        }
        let flag = header[0];
        if flag != 0 {
            return Err(format!(
                "message {index} has compression flag {flag}: this server takes only \
                 uncompressed messages (flag 0)"
            ));
        }
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let arrived = header.len() - 5;
        if arrived < length {
            return Err(format!(
                "message {index} is truncated: it declares {length} bytes, {arrived} arrived"
            ));
        }
        offset += 5 + length;
        index += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_messages;

    #[test]
    fn grpc_web_bodies_are_checked() {
        assert_eq!(check_messages(b"", false), Ok(()));
        assert_eq!(check_messages(&[0, 0, 0, 0, 2, 8, 1], false), Ok(()));
        assert_eq!(
            check_messages(&[0, 0, 0, 0, 9, 8, 1], false).unwrap_err(),
            "message 0 is truncated: it declares 9 bytes, 2 arrived"
        );
        assert_eq!(
            check_messages(&[0, 0, 0, 0, 0, 0, 0], false).unwrap_err(),
            "message 1 is truncated: 2 bytes of its 5-byte header arrived"
        );
        assert!(check_messages(&[7, 0, 0, 0, 0], false)
            .unwrap_err()
            .starts_with("message 0 has compression flag 7"));
        // "AAAAAAIIAQ==" is [0, 0, 0, 0, 2, 8, 1]; two messages each with their own padding.
        assert_eq!(check_messages(b"AAAAAAIIAQ==", true), Ok(()));
        assert_eq!(check_messages(b"AAAAAAIIAQ==AAAAAAIIAQ==", true), Ok(()));
        assert!(check_messages(b"AAAAAAIIAQ=", true)
            .unwrap_err()
            .contains("not a multiple of 4"));
        assert!(check_messages(b"AAAA*AIIAQ==", true)
            .unwrap_err()
            .starts_with("invalid base64 at character 4"));
    }
}
