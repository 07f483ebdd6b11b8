//! Every distribution-spec error code, its HTTP status, and the JSON error body
//! (`{"errors":[{"code","message","detail"}]}`), mapped in one place.

use crate::content::ContentError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The error codes of the OCI distribution spec 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
        }
    }

    /// The status a code is usually sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestBlobUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// An error answered to a registry client.
#[derive(Debug)]
pub struct RegistryError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    /// `WWW-Authenticate` challenge for 401s.
    pub challenge: Option<String>,
}

impl RegistryError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RegistryError { status: code.status(), code, message: message.into(), challenge: None }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn unauthorized(challenge: String, message: impl Into<String>) -> Self {
        RegistryError { challenge: Some(challenge), ..Self::new(Code::Unauthorized, message) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        // Not a spec code; the spec lets registries answer 5xx with any code.
        Self::new(Code::Unsupported, message).with_status(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code.as_str(), self.message)
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), "{}", self.message);
        }
        let body = json!({"errors": [{"code": self.code.as_str(), "message": self.message, "detail": null}]});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(c) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        resp
    }
}

impl From<ContentError> for RegistryError {
    fn from(e: ContentError) -> Self {
        let msg = e.to_string();
        let code = match &e {
            ContentError::NotFound(_) => Code::ManifestUnknown,
            ContentError::DigestMismatch { .. } | ContentError::Digest(_) => Code::DigestInvalid,
            ContentError::SizeMismatch { .. } => Code::SizeInvalid,
            ContentError::SizeExceedsLimit { .. } => {
                return RegistryError::new(Code::SizeInvalid, msg).with_status(StatusCode::PAYLOAD_TOO_LARGE);
            }
            ContentError::Name(crate::oci::NameError::InvalidTag(_)) => Code::ManifestInvalid,
            ContentError::Name(_) => Code::NameInvalid,
            ContentError::Manifest(_) => Code::ManifestInvalid,
            ContentError::MissingReference { .. } => Code::ManifestBlobUnknown,
            ContentError::UploadUnknown(_) => Code::BlobUploadUnknown,
            ContentError::UploadBusy { .. } => {
                return RegistryError::new(Code::BlobUploadInvalid, msg).with_status(StatusCode::CONFLICT);
            }
            ContentError::RangeInvalid { .. } => {
                return RegistryError::new(Code::BlobUploadInvalid, msg).with_status(StatusCode::RANGE_NOT_SATISFIABLE);
            }
            ContentError::Body(_) => Code::BlobUploadInvalid,
            ContentError::Unsupported(_) => Code::Unsupported,
            ContentError::Remote(_) => return RegistryError::internal(msg),
            ContentError::Unauthorized(_) => Code::Denied,
            ContentError::Io { .. } => {
                // The full error (with server paths) goes to the log, not to the client.
                tracing::error!("storage: {msg}");
                return RegistryError::internal("internal storage error; see the registry's log");
            }
        };
        RegistryError::new(code, msg)
    }
}

pub type RegistryResult<T> = Result<T, RegistryError>;
