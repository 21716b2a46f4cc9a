//! `/admin/keyspaces`: list, create, alter and drop the cluster's keyspaces.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /admin/keyspaces` | 200 `{"schema_version": N, "keyspaces": [KeyspaceStatus...]}` |
//! | `POST /admin/keyspaces` with `{"name", "replication_factor", "consistency"?}` | 201 `{"ok": true, "schema_version": N}` once the cluster agreed on it |
//! | `PATCH /admin/keyspaces/{name}` with `{"replication_factor"?, "consistency"?}` | 200 `{"ok": true, "schema_version": N}`; the factor moves by at most one per step |
//! | `DELETE /admin/keyspaces/{name}` | 200 `{"ok": true, "schema_version": N}`; its id is never reused, so a keyspace created again under the name starts empty |
//!
//! Errors: 400 `invalid` (a bad name, factor or level), 404
//! `unknown_keyspace`, 409 `exists`, 503 `no_quorum` (too few of the
//! schema's voters answered; check `cassio status`, then retry) or `busy`.

use super::{error, request_error, Gateway};
use crate::handle::RequestError;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cassio_core::schema::{SchemaChange, SchemaError};
use cassio_core::schema_agreement::ChangeError;
use cassio_core::Consistency;
use serde::Deserialize;
use serde_json::json;

/// The body of a create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    name: String,
    replication_factor: usize,
    consistency: Option<String>,
}

/// The body of an alter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlterBody {
    replication_factor: Option<usize>,
    consistency: Option<String>,
}

/// The status and code of a failed schema change.
pub(super) fn schema_error_status(e: &ChangeError) -> (StatusCode, &'static str) {
    match e {
        ChangeError::Invalid(SchemaError::Exists(_)) => (StatusCode::CONFLICT, "exists"),
        ChangeError::Invalid(SchemaError::Unknown(_)) => {
            (StatusCode::NOT_FOUND, "unknown_keyspace")
        }
        // Retry once repair caught up: a conflict with the cluster's state,
        // not a bad request.
        ChangeError::Invalid(SchemaError::RepairPending { .. }) => {
            (StatusCode::CONFLICT, "repair_pending")
        }
        ChangeError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        ChangeError::NoQuorum => (StatusCode::SERVICE_UNAVAILABLE, "no_quorum"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
    }
}

/// The JSON body, whatever `Content-Type` says (`curl -d` sends a form
/// type), or a 400 naming what is wrong.
fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("the body is not the JSON this route takes: {e}"),
        ))
    })
}

fn level(text: Option<String>) -> Result<Option<Consistency>, Box<Response>> {
    text.map(|t| t.parse::<Consistency>())
        .transpose()
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "invalid", e)))
}

async fn change(gw: &Gateway, change: SchemaChange, created: bool) -> Response {
    match gw.handle.change_schema(change).await {
        Ok(version) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                status,
                Json(json!({ "ok": true, "schema_version": version })),
            )
                .into_response()
        }
        Err(e) => request_error(&e),
    }
}

/// `GET /admin/keyspaces`.
pub(super) async fn list(State(gw): State<Gateway>) -> Response {
    match gw.handle.status().await {
        Ok(st) => Json(json!({
            "schema_version": st.schema_version,
            "keyspaces": st.keyspaces,
        }))
        .into_response(),
        Err(e) => request_error(&e),
    }
}

/// `POST /admin/keyspaces`.
pub(super) async fn create(State(gw): State<Gateway>, body: Bytes) -> Response {
    let body: CreateBody = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let default_consistency = match level(body.consistency) {
        Ok(l) => l.unwrap_or(Consistency::Quorum),
        Err(r) => return *r,
    };
    let c = SchemaChange::Create {
        name: body.name,
        replication_factor: body.replication_factor,
        default_consistency,
    };
    change(&gw, c, true).await
}

/// `PATCH /admin/keyspaces/{name}`.
pub(super) async fn alter(
    State(gw): State<Gateway>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let body: AlterBody = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let default_consistency = match level(body.consistency) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    if body.replication_factor.is_none() && default_consistency.is_none() {
        return request_error(&RequestError::BadRequest(
            "nothing to change: give replication_factor and/or consistency".into(),
        ));
    }
    let c = SchemaChange::Alter {
        name,
        replication_factor: body.replication_factor,
        default_consistency,
    };
    change(&gw, c, false).await
}

/// `DELETE /admin/keyspaces/{name}`.
pub(super) async fn drop(State(gw): State<Gateway>, Path(name): Path<String>) -> Response {
    change(&gw, SchemaChange::Drop { name }, false).await
}
