//! gRPC-web beside plain HTTP/1.1 on one port.
//!
//! `tonic_web::GrpcWebLayer` translates gRPC-web to gRPC but answers 400 to every other HTTP/1.1
//! request, which would shut out REST clients ([`crate::rest`]). [`GrpcWebLayer`] hands only
//! gRPC-web requests (an `application/grpc-web*` content type) to tonic-web and every other request
//! straight to the inner service.

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
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc-web"))
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
