//! The HTTP API on `api.listen`: `/health`, `/status` (JSON), `/metrics` (Prometheus text).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

use crate::agent::AgentState;
use crate::inputs::InputStatus;
use crate::outputs::stats::OutputStatus;

/// `/status`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: u64,
    /// No output is failing.
    pub healthy: bool,
    pub inputs: Vec<InputStatus>,
    pub outputs: Vec<OutputStatus>,
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls are no-ops).
pub fn install_metrics() {
    if PROMETHEUS.get().is_some() {
        return;
    }
    let builder = PrometheusBuilder::new().set_buckets_for_metric(
        Matcher::Full("logferry_output_request_seconds".into()),
        &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ],
    );
    let builder = match builder {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot set histogram buckets");
            PrometheusBuilder::new()
        }
    };
    match builder.install_recorder() {
        Ok(h) => {
            let _ = PROMETHEUS.set(h);
        }
        Err(e) => tracing::warn!(error = %e, "cannot install the metrics recorder"),
    }
}

/// The metrics in Prometheus text format.
pub fn render_metrics() -> String {
    PROMETHEUS.get().map(|h| h.render()).unwrap_or_default()
}

/// Starts the API server; the task runs until aborted.
pub async fn serve(
    listen: &str,
    state: Arc<AgentState>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let app = Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on api.listen {listen}: {e}"))?;
    tracing::info!(listen = %listen, "API listening (/health, /status, /metrics)");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "API server stopped");
        }
    }))
}

async fn health() -> &'static str {
    "ok\n"
}

async fn status(State(state): State<Arc<AgentState>>) -> Json<Status> {
    Json(state.status())
}

async fn metrics_text() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_metrics(),
    )
        .into_response()
}
