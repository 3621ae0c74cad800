//! `GET /api/instances` (contract section 10): the instances sharing the
//! database that are alive now, and how many runs each drives.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::cluster::InstanceInfo;

/// The live instances.
#[derive(Serialize, utoipa::ToSchema)]
pub struct InstanceList {
    instances: Vec<InstanceInfo>,
}

/// `GET /api/instances`
#[utoipa::path(
    get, path = "/api/instances", tag = "cluster",
    summary = "The live instances",
    description = "Every instance whose heartbeat is younger than `AGENT_LEASE_SECS`, oldest first, with the runs it drives now.",
    responses((status = 200, description = "The live instances", body = InstanceList))
)]
pub async fn list(app: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let instances = app.registry.deps().cluster.instances().await?;
    Ok(HttpResponse::Ok().json(InstanceList { instances }))
}
