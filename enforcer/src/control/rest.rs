//! The REST API (`--api-address`): the control socket's [`Command`]s over HTTP for
//! connectivity-management platforms, with bearer-token authentication (RFC 6750) and
//! optional TLS. Every request becomes one command for the actor, exactly as a control-socket
//! line does: one implementation, two transports. The OpenAPI 3 document is generated from the
//! handlers and types below (utoipa) and served at `/openapi.json` without a token.
//!
//! Errors are JSON `{"error": "..."}`: 400 for a malformed request (not JSON, a bad query or
//! argument), 401 without a valid token (nothing is done), 404 for an IMSI not in the policy,
//! 409 for a command the daemon refused (it says why; nothing changed), 413 for a body over
//! [`MAX_BODY`], 503 while the daemon stops.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{
        DefaultBodyLimit, Path, Query, Request, State,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::debug;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{
    Applied, Command, ErrorKind, Flows, PolicyCheck, Reply, SimInfo, SimPage, Status, unix,
};
use crate::report::Report;

/// Largest request body, bytes: a policy text for `validate` and `diff` (an inventory of a
/// million SIMs belongs in a file beside the policy, not in a request).
pub const MAX_BODY: usize = 8 << 20;

/// An event for `/events` subscribers: its SSE event name (`deny`, `alert`) and its JSON.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// `deny` or `alert`.
    pub kind: &'static str,
    /// The event as JSON, as `--deny-events` and `--alerts` write it.
    pub json: String,
}

/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's head.
const HEADER_READ: Duration = Duration::from_secs(30);
/// REST connections open at most.
pub const MAX_CONNECTIONS: usize = 256;

/// Events buffered per `/events` subscriber; a slower one misses the oldest (and is told).
pub const STREAM_BUFFER: usize = 4096;

#[derive(Clone)]
struct Api {
    actor: mpsc::Sender<unix::Request>,
    token: Arc<[u8]>,
    events: broadcast::Sender<Arc<StreamEvent>>,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(ErrorBody { error: self.1 })).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"enforcer\""),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError(
            status,
            format!("{}; nothing was done", rejection.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{}; nothing was done", rejection.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{}; nothing was done", rejection.body_text()),
        )
    }
}

/// Send `command` to the actor and wait for its reply; an error reply becomes its status.
async fn ask(api: &Api, command: Command) -> Result<Reply, ApiError> {
    let gone = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping; nothing was done".into(),
        )
    };
    let (tx, rx) = oneshot::channel();
    api.actor.send((command, tx)).await.map_err(|_| gone())?;
    let answer = rx.await.map_err(|_| gone())?;
    match answer.reply {
        Reply::Error { message, kind } => Err(ApiError(
            match kind {
                Some(ErrorKind::NotFound) => StatusCode::NOT_FOUND,
                Some(ErrorKind::Invalid) => StatusCode::BAD_REQUEST,
                None => StatusCode::CONFLICT,
            },
            message,
        )),
        reply => Ok(reply),
    }
}

fn unexpected(reply: &Reply) -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the daemon answered with an unexpected reply ({reply:?})"),
    )
}

/// Bearer-token check (RFC 6750 §2.1) in constant time; `/openapi.json` needs none.
async fn authenticate(State(api): State<Api>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/openapi.json" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    let valid = given.is_some_and(|given| {
        given.len() == api.token.len()
            && given
                .iter()
                .zip(api.token.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !valid {
        debug!(path = %request.uri().path(), "REST request without a valid token refused.");
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required (Authorization: Bearer TOKEN); nothing was done"
                .into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// Query of `GET /sims`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SimQuery {
    /// SIMs to skip (of those the filters keep).
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// SIMs to return at most, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only SIMs of this segment.
    segment: Option<String>,
    /// Only SIMs in this state.
    #[param(pattern = "^(active|quarantined|imei_mismatch)$")]
    state: Option<String>,
    /// Only IMSIs starting with these digits.
    #[param(pattern = "^[0-9]{0,15}$")]
    imsi_prefix: Option<String>,
}

/// Body of `POST /sims/{imsi}/bind`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BindBody {
    /// An IPv4 address, or an IPv6 address or /64 prefix, inside a pool.
    address: String,
}

/// Body of `POST /sims/{imsi}/unbind` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UnbindBody {
    /// The binding to remove; all of the SIM's run-time bindings when absent.
    address: Option<String>,
}

/// Body of `PUT /sims/{imsi}/imei-lock`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ImeiLockBody {
    /// An IMEI (14 or 15 digits), `tac:` and 8 digits, `learn` or `off`; `null`: the policy's
    /// lock again.
    lock: Option<String>,
}

/// Body of `POST /policy/validate` and `POST /policy/diff`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PolicyText {
    /// The policy, TOML (see README "Policy files").
    text: String,
}

/// Body of `POST /policy/apply`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    /// The policy file, an absolute path on the gateway.
    path: String,
}

/// The policy in force.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct PolicyInfo {
    /// Its file.
    path: String,
    /// Unix time (seconds) it was applied.
    applied_at: u64,
    /// Active generation (0 or 1).
    generation: u8,
    /// Policies applied since the daemon started.
    applies: u64,
    /// The file's text as it is now (at most [`MAX_BODY`] bytes); `null` if it cannot be
    /// read.
    text: Option<String>,
    /// Whether the file changed after it was applied (its text is then not what is enforced
    /// until the next reload).
    modified_since_applied: bool,
}

/// Query of `GET /stats/sims` and `GET /flows`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImsiQuery {
    /// IMSIs, comma-separated (at most 64).
    imsi: Option<String>,
}

fn imsis(query: &ImsiQuery) -> Result<Vec<String>, ApiError> {
    let list: Vec<String> = query
        .imsi
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if list.len() > 64 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "at most 64 IMSIs per request; nothing was done".into(),
        ));
    }
    Ok(list)
}

/// The API's OpenAPI 3 document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "enforcer",
        description = "Zero Trust enforcement for cellular IoT fleets: SIMs, policy, counters, \
                       flows and events of one gateway."
    ),
    paths(
        list_sims, show_sim, bind_sim, unbind_sim, quarantine_sim, release_sim, reset_imei,
        set_imei_lock,
        get_policy, validate_policy, diff_policy, apply_policy, segment_stats, sim_stats,
        flows, status, event_stream
    ),
    components(schemas(
        ErrorBody,
        BindBody,
        UnbindBody,
        ImeiLockBody,
        PolicyText,
        ApplyBody,
        PolicyInfo
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// A page of SIMs, filtered.
#[utoipa::path(get, path = "/sims", params(SimQuery),
    responses((status = 200, body = SimPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn list_sims(
    State(api): State<Api>,
    query: Result<Query<SimQuery>, QueryRejection>,
) -> Result<Json<SimPage>, ApiError> {
    let Query(query) = query?;
    let command = Command::SimList {
        offset: query.offset.unwrap_or(0),
        limit: query.limit.unwrap_or(100),
        segment: query.segment,
        state: query.state,
        imsi_prefix: query.imsi_prefix,
    };
    match ask(&api, command).await? {
        Reply::Sims(page) => Ok(Json(page)),
        other => Err(unexpected(&other)),
    }
}

/// A SIM-changing or SIM-reading command's reply.
async fn sim_reply(api: &Api, command: Command) -> Result<Json<SimInfo>, ApiError> {
    match ask(api, command).await? {
        Reply::Sim(info) => Ok(Json(info)),
        other => Err(unexpected(&other)),
    }
}

/// One SIM: segment, state, addresses and their bindings, IMEI lock, counters.
#[utoipa::path(get, path = "/sims/{imsi}",
    params(("imsi" = String, Path, description = "IMSI", pattern = "^[0-9]{14,15}$")),
    responses((status = 200, body = SimInfo), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn show_sim(
    State(api): State<Api>,
    imsi: Result<Path<String>, PathRejection>,
) -> Result<Json<SimInfo>, ApiError> {
    let Path(imsi) = imsi?;
    sim_reply(&api, Command::SimShow { imsi }).await
}

/// Bind an address to the SIM at run time (in place of its file address of that family).
#[utoipa::path(post, path = "/sims/{imsi}/bind", request_body = BindBody,
    params(("imsi" = String, Path, description = "IMSI", pattern = "^[0-9]{14,15}$")),
    responses((status = 200, body = SimInfo), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn bind_sim(
    State(api): State<Api>,
    imsi: Result<Path<String>, PathRejection>,
    body: Result<Json<BindBody>, JsonRejection>,
) -> Result<Json<SimInfo>, ApiError> {
    let Path(imsi) = imsi?;
    let Json(body) = body?;
    sim_reply(
        &api,
        Command::SimBind {
            imsi,
            address: body.address,
            source: "api".into(),
        },
    )
    .await
}

/// Remove the SIM's run-time bindings (or the one given).
#[utoipa::path(post, path = "/sims/{imsi}/unbind", request_body = UnbindBody,
    params(("imsi" = String, Path, description = "IMSI", pattern = "^[0-9]{14,15}$")),
    responses((status = 200, body = SimInfo), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn unbind_sim(
    State(api): State<Api>,
    imsi: Result<Path<String>, PathRejection>,
    body: Result<Json<UnbindBody>, JsonRejection>,
) -> Result<Json<SimInfo>, ApiError> {
    let Path(imsi) = imsi?;
    let address = match body {
        Ok(Json(body)) => body.address,
        // No body at all: every binding.
        Err(JsonRejection::MissingJsonContentType(_)) => None,
        Err(err) => return Err(err.into()),
    };
    sim_reply(&api, Command::SimUnbind { imsi, address }).await
}

/// Quarantine the SIM: every packet dropped from the next one on, until released.
#[utoipa::path(post, path = "/sims/{imsi}/quarantine",
    params(("imsi" = String, Path, description = "IMSI", pattern = "^[0-9]{14,15}$")),
    responses((status = 200, body = SimInfo), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn quarantine_sim(
    State(api): State<Api>,
    imsi: Result<Path<String>, PathRejection>,
) -> Result<Json<SimInfo>, ApiError> {
    let Path(imsi) = imsi?;
    sim_reply(
        &api,
        Command::SimQuarantine {
            imsi,
            source: "api".into(),
        },
    )
    .await
}

/// Lift a quarantine set by command.
#[utoipa::path(post, path = "/sims/{imsi}/release",
    params(("imsi" = String, Path, description = "IMSI", pattern = "^[0-9]{14,15}$")),
    responses((status = 200, body = SimInfo), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn release_sim(
    State(api): State<Api>,
    imsi: Result<Path<String>, PathRejection>,
) -> Result<Json<SimInfo>, ApiError> {
    let Path(imsi) = imsi?;
    sim_reply(&api, Command::SimRelease { imsi }).await
}

/// IMEI lock: forget the learned device and lift an `imei_mismatch` state.
#[utoipa::path(post, path = "/sims/{imsi}/imei-reset",
    params(("imsi" = String, Path, description = "IMSI", pattern = "^[0-9]{14,15}$")),
    responses((status = 200, body = SimInfo), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn reset_imei(
    State(api): State<Api>,
    imsi: Result<Path<String>, PathRejection>,
) -> Result<Json<SimInfo>, ApiError> {
    let Path(imsi) = imsi?;
    sim_reply(&api, Command::SimImeiReset { imsi }).await
}

/// IMEI lock: set the SIM's lock in place of the policy's; the device of its last session is
/// judged against it at once.
#[utoipa::path(put, path = "/sims/{imsi}/imei-lock", request_body = ImeiLockBody,
    params(("imsi" = String, Path, description = "IMSI", pattern = "^[0-9]{14,15}$")),
    responses((status = 200, body = SimInfo), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn set_imei_lock(
    State(api): State<Api>,
    imsi: Result<Path<String>, PathRejection>,
    body: Result<Json<ImeiLockBody>, JsonRejection>,
) -> Result<Json<SimInfo>, ApiError> {
    let Path(imsi) = imsi?;
    let Json(body) = body?;
    sim_reply(
        &api,
        Command::SimImeiLock {
            imsi,
            lock: body.lock,
        },
    )
    .await
}

/// The policy in force: its file, when it was applied, and the file's text.
#[utoipa::path(get, path = "/policy",
    responses((status = 200, body = PolicyInfo), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn get_policy(State(api): State<Api>) -> Result<Json<PolicyInfo>, ApiError> {
    match ask(&api, Command::Status).await? {
        Reply::Status(status) => {
            let path = status.policy.clone();
            let (text, modified) = tokio::task::spawn_blocking(move || {
                let text = crate::policy::source::read_text(&path, MAX_BODY as u64).ok();
                let modified = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|t| t.as_secs());
                (text, modified)
            })
            .await
            .unwrap_or((None, None));
            Ok(Json(PolicyInfo {
                path: status.policy.display().to_string(),
                applied_at: status.applied_at,
                generation: status.generation,
                applies: status.applies,
                text,
                modified_since_applied: modified.is_some_and(|m| m > status.applied_at),
            }))
        }
        other => Err(unexpected(&other)),
    }
}

/// Validate a policy text (as if it were the file in force); changes nothing.
#[utoipa::path(post, path = "/policy/validate", request_body = PolicyText,
    responses((status = 200, body = PolicyCheck), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn validate_policy(
    State(api): State<Api>,
    body: Result<Json<PolicyText>, JsonRejection>,
) -> Result<Json<PolicyCheck>, ApiError> {
    let Json(body) = body?;
    match ask(&api, Command::PolicyCheck { text: body.text }).await? {
        Reply::Checked(check) => Ok(Json(check)),
        other => Err(unexpected(&other)),
    }
}

/// What applying a policy text would change against the file in force; changes nothing.
#[utoipa::path(post, path = "/policy/diff", request_body = PolicyText,
    responses((status = 200, description = "The changes, as `enforcer policy diff --json` prints them", body = Object),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn diff_policy(
    State(api): State<Api>,
    body: Result<Json<PolicyText>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    match ask(&api, Command::PolicyDiff { text: body.text }).await? {
        Reply::Diff { diff } => Ok(Json(diff)),
        other => Err(unexpected(&other)),
    }
}

/// Validate, compile and apply a policy file on the gateway, in the directory of the policy in
/// force; it becomes the file in force.
#[utoipa::path(post, path = "/policy/apply", request_body = ApplyBody,
    responses((status = 200, body = Applied), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn apply_policy(
    State(api): State<Api>,
    body: Result<Json<ApplyBody>, JsonRejection>,
) -> Result<Json<Applied>, ApiError> {
    let Json(body) = body?;
    let path = std::path::PathBuf::from(&body.path);
    if !path.is_absolute() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` is not an absolute path; give the policy file's absolute path on the \
                 gateway. Nothing was done",
                body.path
            ),
        ));
    }
    // Only a file beside the policy in force: a token must not let a client make the daemon
    // (root) read any file of the gateway and echo pieces of it in parse errors.
    let Reply::Status(status) = ask(&api, Command::Status).await? else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon's status is unavailable; nothing was done".into(),
        ));
    };
    let dir = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .ok()
            .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
    };
    let allowed = dir(&status.policy);
    let canonical = std::fs::canonicalize(&path).ok();
    let is_toml = canonical
        .as_ref()
        .is_some_and(|p| p.extension().is_some_and(|e| e == "toml"));
    if allowed.is_none() || dir(&path) != allowed || !is_toml {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` is not an existing .toml file in the directory of the policy in force \
                 ({}); put the policy there. Nothing was done",
                body.path,
                status
                    .policy
                    .parent()
                    .map_or_else(String::new, |p| p.display().to_string())
            ),
        ));
    }
    let path = canonical.unwrap_or(path);
    match ask(&api, Command::ApplyPolicy { path }).await? {
        Reply::Applied(applied) => Ok(Json(applied)),
        other => Err(unexpected(&other)),
    }
}

/// Counters per segment (by verdict and reason) and per rule.
#[utoipa::path(get, path = "/stats/segments",
    responses((status = 200, body = Report), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn segment_stats(State(api): State<Api>) -> Result<Json<Report>, ApiError> {
    match ask(&api, Command::SegmentStats).await? {
        Reply::Stats(report) => Ok(Json(*report)),
        other => Err(unexpected(&other)),
    }
}

/// Counters of the SIMs given (and of every segment and rule).
#[utoipa::path(get, path = "/stats/sims", params(ImsiQuery),
    responses((status = 200, body = Report), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn sim_stats(
    State(api): State<Api>,
    query: Result<Query<ImsiQuery>, QueryRejection>,
) -> Result<Json<Report>, ApiError> {
    let Query(query) = query?;
    let imsis = imsis(&query)?;
    if imsis.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "give `imsi` (comma-separated); the whole fleet's counters go through IPFIX, \
             `enforcer stats` or /stats/segments. Nothing was done"
                .into(),
        ));
    }
    match ask(
        &api,
        Command::Stats {
            imsis,
            stream: None,
        },
    )
    .await?
    {
        Reply::Stats(report) => Ok(Json(*report)),
        other => Err(unexpected(&other)),
    }
}

/// Live sessions, of the SIMs given or of all, busiest first.
#[utoipa::path(get, path = "/flows", params(ImsiQuery),
    responses((status = 200, body = Flows), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn flows(
    State(api): State<Api>,
    query: Result<Query<ImsiQuery>, QueryRejection>,
) -> Result<Json<Flows>, ApiError> {
    let Query(query) = query?;
    let imsis = imsis(&query)?;
    match ask(&api, Command::Flows { imsis }).await? {
        Reply::Flows(flows) => Ok(Json(flows)),
        other => Err(unexpected(&other)),
    }
}

/// What is loaded and attached.
#[utoipa::path(get, path = "/status",
    responses((status = 200, body = Status), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn status(State(api): State<Api>) -> Result<Json<Status>, ApiError> {
    match ask(&api, Command::Status).await? {
        Reply::Status(status) => Ok(Json(*status)),
        other => Err(unexpected(&other)),
    }
}

/// Deny events and alerts as they happen, as server-sent events: `event: deny` with a deny
/// event's JSON (as `--deny-events` writes it), `event: alert` with an alert's, `event: lagged`
/// with how many this subscriber missed.
#[utoipa::path(get, path = "/events",
    responses((status = 200, content_type = "text/event-stream", body = String,
               description = "server-sent events"),
              (status = 401, body = ErrorBody)))]
async fn event_stream(State(api): State<Api>) -> impl IntoResponse {
    let mut rx = api.events.subscribe();
    let stream = async_stream(
        move |tx: mpsc::Sender<Result<Event, Infallible>>| async move {
            loop {
                let event = match rx.recv().await {
                    Ok(event) => Event::default().event(event.kind).data(event.json.clone()),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        Event::default().event("lagged").data(n.to_string())
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A stream fed by a task: `produce` gets the sending half.
fn async_stream<F, Fut>(produce: F) -> impl futures_util::Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(produce(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /openapi.json".into(),
    )
}

/// The API's routes, with authentication and the body limit.
pub fn router(
    actor: mpsc::Sender<unix::Request>,
    token: &str,
    events: broadcast::Sender<Arc<StreamEvent>>,
) -> Router {
    let api = Api {
        actor,
        token: token.as_bytes().into(),
        events,
    };
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/sims", get(list_sims))
        .route("/sims/{imsi}", get(show_sim))
        .route("/sims/{imsi}/bind", post(bind_sim))
        .route("/sims/{imsi}/unbind", post(unbind_sim))
        .route("/sims/{imsi}/quarantine", post(quarantine_sim))
        .route("/sims/{imsi}/release", post(release_sim))
        .route("/sims/{imsi}/imei-reset", post(reset_imei))
        .route("/sims/{imsi}/imei-lock", put(set_imei_lock))
        .route("/policy", get(get_policy))
        .route("/policy/validate", post(validate_policy))
        .route("/policy/diff", post(diff_policy))
        .route("/policy/apply", post(apply_policy))
        .route("/stats/segments", get(segment_stats))
        .route("/stats/sims", get(sim_stats))
        .route("/flows", get(flows))
        .route("/status", get(status))
        .route("/events", get(event_stream))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Serve `router` on `listener` until the runtime stops, over TLS when `tls` is given. At most
/// [`MAX_CONNECTIONS`] at once (more are closed at accept); a client must finish its TLS
/// handshake within [`HANDSHAKE`] and send each request's head within [`HEADER_READ`], so a
/// slow or silent one cannot hold descriptors for long.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors, say: pause rather than spin.
                debug!(error = %err, "REST accept failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(peer = %peer, "REST connection refused: {MAX_CONNECTIONS} are open.");
            continue;
        };
        let tls = tls.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper_util::service::TowerToHyperService::new(router);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ);
            let result = match tls {
                None => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await
                }
                Some(tls) => {
                    let stream = match tokio::time::timeout(HANDSHAKE, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            debug!(peer = %peer, error = %err, "TLS handshake failed.");
                            return;
                        }
                        Err(_) => {
                            debug!(peer = %peer, "TLS handshake timed out.");
                            return;
                        }
                    };
                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
            };
            if let Err(err) = result {
                debug!(peer = %peer, error = %err, "REST connection ended with an error.");
            }
        });
    }
}

/// Why the TLS files are refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read.
    #[error("cannot read {what} from {path}: {source}")]
    Pem {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refuses the pair.
    #[error("the certificate and key in {cert} and {key} do not make a TLS server: {source}")]
    Config {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// Why.
        #[source]
        source: tokio_rustls::rustls::Error,
    },
}

/// A TLS acceptor from a PEM certificate chain and private key (TLS 1.2 and 1.3, ring).
///
/// # Errors
/// [`TlsError`], naming the file.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| TlsError::Pem {
            what: "the certificate chain",
            path: cert.display().to_string(),
            source,
        })?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        what: "the private key",
        path: key.display().to_string(),
        source,
    })?;
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
    .map_err(|source| TlsError::Config {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        source,
    })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document is valid JSON with every route and the bearer scheme.
    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for path in [
            "/sims",
            "/sims/{imsi}",
            "/sims/{imsi}/bind",
            "/sims/{imsi}/unbind",
            "/sims/{imsi}/quarantine",
            "/sims/{imsi}/release",
            "/sims/{imsi}/imei-reset",
            "/sims/{imsi}/imei-lock",
            "/policy",
            "/policy/validate",
            "/policy/diff",
            "/policy/apply",
            "/stats/segments",
            "/stats/sims",
            "/flows",
            "/status",
            "/events",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(
            doc["paths"]["/sims/{imsi}"]["get"]["parameters"][0]["schema"]["pattern"],
            "^[0-9]{14,15}$",
            "IMSIs in paths: 14 or 15 digits (3GPP TS 23.003 §2.2)"
        );
    }
}
