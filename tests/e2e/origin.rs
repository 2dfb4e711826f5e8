//! A scriptable upstream origin for the proxy tests: it answers every request by playing a
//! script of body chunks, pauses and failures, so a test controls exactly when bytes leave it.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;

/// One step of an origin's answer.
#[derive(Clone)]
pub enum Step {
    Send(Bytes),
    /// Wait until the test opens the gate.
    WaitFor(Arc<Notify>),
    /// Break the connection mid-body.
    Die,
}

/// A running origin on a loopback port.
pub struct Origin {
    pub base: String,
    _task: tokio::task::JoinHandle<()>,
}

impl Origin {
    /// Serves `script` for every request, with `headers` on the response.
    pub async fn start(headers: Vec<(&'static str, String)>, script: Vec<Step>) -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let headers = headers.clone();
                let script = script.clone();
                let service = hyper::service::service_fn(move |_req| {
                    let headers = headers.clone();
                    let script = script.clone();
                    async move { Ok::<_, Infallible>(play(headers, script)) }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { base, _task: task }
    }
}

type Body = StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

fn play(headers: Vec<(&'static str, String)>, script: Vec<Step>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        for step in script {
            match step {
                Step::Send(bytes) => {
                    if tx.send(Ok(Frame::data(bytes))).await.is_err() {
                        return;
                    }
                }
                Step::WaitFor(gate) => gate.notified().await,
                Step::Die => {
                    let _ = tx.send(Err(std::io::Error::other("origin died"))).await;
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut response = Response::new(StreamBody::new(Box::pin(stream) as futures_util::stream::BoxStream<'static, _>));
    *response.status_mut() = StatusCode::OK;
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}
