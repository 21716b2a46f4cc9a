//! `/admin/keyspaces`: list, create, alter and drop the cluster's keyspaces.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /admin/keyspaces` | 200 `{"schema_version": N, "keyspaces": [KeyspaceStatus...]}`, each with its `mode` (`lww` or `craq`) |
//! | `POST /admin/keyspaces` with `{"name", "replication_factor"?, "datacenters"?, "spread_racks"?, "consistency"?, "mode"?}` | 201 `{"ok": true, "schema_version": N}` once the cluster agreed on it; `datacenters` (`{"dc1": 3, "dc2": 2}`) gives a factor per datacenter instead of `replication_factor`, `spread_racks` spreads a single factor over racks; `"mode": "craq"` makes a chain-replicated (linearizable) keyspace of `replication_factor` (default level `QUORUM`; no datacenters, rack spread or other level), `"lww"` (the default) a last-write-wins one |
//! | `PATCH /admin/keyspaces/{name}` with `{"replication_factor"?, "datacenters"?, "spread_racks"?, "consistency"?}` | 200 `{"ok": true, "schema_version": N}`; the factor (or one datacenter's) moves by at most one per step |
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
use cassio_core::topology::Replication;
use cassio_core::{Consistency, ReplicationStrategy};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

/// The body of a create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    name: String,
    replication_factor: Option<usize>,
    /// A factor per datacenter, instead of `replication_factor`.
    datacenters: Option<BTreeMap<String, usize>>,
    /// Spread a single factor's replicas over distinct racks.
    spread_racks: Option<bool>,
    consistency: Option<String>,
    /// `lww` (the default) or `craq`.
    mode: Option<String>,
}

/// The body of an alter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlterBody {
    replication_factor: Option<usize>,
    datacenters: Option<BTreeMap<String, usize>>,
    spread_racks: Option<bool>,
    consistency: Option<String>,
}

/// The replication a body asks for beyond a plain factor (`None`: a plain
/// factor or nothing), or a 400 for a body that mixes the two forms.
fn placed(
    replication_factor: Option<usize>,
    datacenters: Option<BTreeMap<String, usize>>,
    spread_racks: Option<bool>,
) -> Result<Option<Replication>, Box<Response>> {
    let bad = |m: &str| Box::new(request_error(&RequestError::BadRequest(m.into())));
    match (replication_factor, datacenters, spread_racks) {
        (Some(_), Some(_), _) => Err(bad("give replication_factor or datacenters, not both")),
        (_, Some(dcs), Some(false)) if !dcs.is_empty() => Err(bad(
            "a factor per datacenter always spreads over racks: leave spread_racks out",
        )),
        (None, Some(dcs), _) => {
            if dcs.is_empty() {
                return Err(bad("datacenters is empty"));
            }
            Ok(Some(Replication {
                factor: dcs.values().sum(),
                datacenters: dcs,
                spread_racks: true,
            }))
        }
        (Some(rf), None, Some(spread)) => Ok(Some(Replication {
            factor: rf,
            datacenters: BTreeMap::new(),
            spread_racks: spread,
        })),
        (None, None, Some(_)) => Err(bad("spread_racks needs replication_factor")),
        (_, None, None) => Ok(None),
    }
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
        Ok(st) => {
            let keyspaces: Vec<serde_json::Value> = st
                .keyspaces
                .iter()
                .map(|k| {
                    let mut v = json!(k);
                    v["mode"] = json!(k.strategy);
                    v
                })
                .collect();
            Json(json!({
                "schema_version": st.schema_version,
                "keyspaces": keyspaces,
            }))
            .into_response()
        }
        Err(e) => request_error(&e),
    }
}

/// `POST /admin/keyspaces`.
pub(super) async fn create(State(gw): State<Gateway>, body: Bytes) -> Response {
    let body: CreateBody = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let mode = match body.mode.as_deref() {
        None => ReplicationStrategy::Leaderless,
        Some(m) => match ReplicationStrategy::parse(m) {
            Some(s) => s,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("unknown mode {m:?}: use \"lww\" or \"craq\""),
                )
            }
        },
    };
    if mode == ReplicationStrategy::Craq {
        return create_craq(&gw, body).await;
    }
    let default_consistency = match level(body.consistency) {
        Ok(l) => l.unwrap_or(Consistency::Quorum),
        Err(r) => return *r,
    };
    let c = match placed(body.replication_factor, body.datacenters, body.spread_racks) {
        Err(r) => return *r,
        Ok(Some(replication)) => SchemaChange::CreatePlaced {
            name: body.name,
            replication,
            default_consistency,
        },
        Ok(None) => match body.replication_factor {
            Some(replication_factor) => SchemaChange::Create {
                name: body.name,
                replication_factor,
                default_consistency,
            },
            None => {
                return request_error(&RequestError::BadRequest(
                    "give replication_factor or datacenters".into(),
                ))
            }
        },
    };
    change(&gw, c, true).await
}

/// A create with `"mode": "craq"`: a single factor, at the default level.
async fn create_craq(gw: &Gateway, body: CreateBody) -> Response {
    let bad = |m: &str| request_error(&RequestError::BadRequest(m.into()));
    if body.datacenters.is_some() || body.spread_racks.is_some() {
        return bad("a craq keyspace takes a single replication_factor: datacenters and spread_racks are not supported with mode craq");
    }
    match level(body.consistency) {
        Err(r) => return *r,
        Ok(None | Some(Consistency::Quorum)) => {}
        Ok(Some(other)) => {
            return bad(&format!(
                "a craq keyspace's default level is QUORUM (linearizable); {other} cannot be chosen (ask for ONE per request for weak reads)"
            ))
        }
    }
    let Some(replication_factor) = body.replication_factor else {
        return bad("give replication_factor");
    };
    let c = SchemaChange::CreateCraq {
        name: body.name,
        replication_factor,
    };
    change(gw, c, true).await
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
    let replication = match placed(body.replication_factor, body.datacenters, body.spread_racks) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if let Some(replication) = replication {
        // The replication first; a level given with it follows as a second
        // change (answered with the version of the last one).
        let c = SchemaChange::AlterReplication {
            name: name.clone(),
            replication,
        };
        if default_consistency.is_none() {
            return change(&gw, c, false).await;
        }
        if let Err(e) = gw.handle.change_schema(c).await {
            return request_error(&e);
        }
        let c = SchemaChange::Alter {
            name,
            replication_factor: None,
            default_consistency,
        };
        return change(&gw, c, false).await;
    }
    if body.replication_factor.is_none() && default_consistency.is_none() {
        return request_error(&RequestError::BadRequest(
            "nothing to change: give replication_factor, datacenters and/or consistency".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_one_replication_form() {
        let dcs: BTreeMap<String, usize> = [("dc1".to_string(), 3), ("dc2".to_string(), 2)].into();
        let r = placed(None, Some(dcs.clone()), None)
            .expect("valid")
            .expect("placed");
        assert_eq!((r.total(), r.spread_racks), (5, true));
        let r = placed(Some(3), None, Some(true))
            .expect("valid")
            .expect("placed");
        assert_eq!(
            (r.factor, r.spread_racks, r.per_datacenter()),
            (3, true, false)
        );
        assert_eq!(placed(Some(3), None, None).expect("valid"), None);
        for (rf, d, s) in [
            (Some(3), Some(dcs.clone()), None),
            (None, Some(BTreeMap::new()), None),
            (None, None, Some(true)),
            (None, Some(dcs), Some(false)),
        ] {
            let status = placed(rf, d, s).err().map(|r| r.status());
            assert_eq!(status, Some(StatusCode::BAD_REQUEST));
        }
    }
}
