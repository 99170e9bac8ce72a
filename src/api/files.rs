//! The file store API of SPEC §5. Any key of the project (queue or admin) may use it.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{authorize, ApiError, AppState};
use crate::engine::files::Found;
use crate::engine::projects::Role;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/api/{project}/files", get(list_root))
        .route("/v1/api/{project}/files/{*path}", get(read).post(create).delete(remove))
        // Uploads are streamed to disk and counted against HERALD_MAX_FILE_BYTES
        // there, not buffered against the JSON body limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    op: Option<String>,
}

#[utoipa::path(get, path = "/v1/api/{project}/files/{path}", tag = "files",
    params(("project" = String, Path, description = "Project id"), ("path" = String, Path, description = "File or folder path")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The file's bytes, or a folder listing `{path, items: [{name, type, size, modifiedAt}]}`"),
        (status = 400, description = "A path that could leave the store", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such file or folder", body = crate::api::openapi::ErrorBody),
    ))]
async fn read(
    State(state): State<AppState>,
    Path((project, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &project, &headers, Role::Queue).await?;
    found(state.engine.read_path(&project, &path).await?).await
}

#[utoipa::path(get, path = "/v1/api/{project}/files", tag = "files",
    params(("project" = String, Path, description = "Project id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The root folder's listing `{path, items: [{name, type, size, modifiedAt}]}`")))]
async fn list_root(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &project, &headers, Role::Queue).await?;
    found(state.engine.read_path(&project, "").await?).await
}

async fn found(f: Found) -> Result<Response, ApiError> {
    match f {
        Found::Folder { path, items } => Ok(Json(json!({"path": path, "items": items})).into_response()),
        Found::File { path, size, content_type } => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot open the file: {e}")))?;
            let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
            Ok(([(header::CONTENT_TYPE, content_type), (header::CONTENT_LENGTH, size.to_string())], body).into_response())
        }
    }
}

#[utoipa::path(post, path = "/v1/api/{project}/files/{path}", tag = "files",
    params(("project" = String, Path, description = "Project id"), ("path" = String, Path, description = "File or folder path"),
           ("op" = Option<String>, Query, description = "`mkdir` creates a folder; otherwise the body is the file")),
    request_body(content = Vec<u8>, description = "The file: a raw body, or multipart/form-data whose first file part is used",
                 content_type = "application/octet-stream"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; FILE_CREATE fired", body = crate::engine::files::FileOutcome),
        (status = 200, description = "mkdir of a folder that exists: nothing fired", body = crate::engine::files::FileOutcome),
        (status = 400, description = "A path that could leave the store, or a bad `op`", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "A file where a folder is, or the reverse", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Larger than HERALD_MAX_FILE_BYTES", body = crate::api::openapi::ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    Path((project, path)): Path<(String, String)>,
    Query(query): Query<CreateQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    authorize(&state, &project, req.headers(), Role::Queue).await?;
    let outcome = match query.op.as_deref() {
        Some("mkdir") => state.engine.make_folder(&project, &path).await?,
        Some("upload") | None => {
            let content_type =
                req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            if content_type.starts_with("multipart/form-data") {
                let mut form = Multipart::from_request(req, &state)
                    .await
                    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")))?;
                loop {
                    let field = form
                        .next_field()
                        .await
                        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")))?
                        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "the multipart body has no file part"))?;
                    if field.file_name().is_some() || field.name() == Some("file") {
                        let part_type = field.content_type().map(str::to_string);
                        break state.engine.upload_file(&project, &path, part_type, field).await?;
                    }
                }
            } else {
                let body = req.into_body().into_data_stream();
                state.engine.upload_file(&project, &path, Some(content_type), body).await?
            }
        }
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("`op` must be mkdir, or absent for an upload, not '{other}'"),
            ))
        }
    };
    let status = if outcome.created == Some(false) { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(outcome)).into_response())
}

#[utoipa::path(delete, path = "/v1/api/{project}/files/{path}", tag = "files",
    params(("project" = String, Path, description = "Project id"), ("path" = String, Path, description = "File or folder path")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted (a folder with all it held); FILE_DELETE fired", body = crate::engine::files::FileOutcome),
        (status = 400, description = "A path that could leave the store", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such file or folder", body = crate::api::openapi::ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    Path((project, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &project, &headers, Role::Queue).await?;
    Ok(Json(state.engine.delete_path(&project, &path).await?).into_response())
}
