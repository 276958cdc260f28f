//! Input records → [`SignupEvent`], or a [`DecodeError`] that says exactly what is wrong.
//!
//! A record that does not decode is dead-lettered at stage `decode` with the error's text as the
//! reason; it never stops its partition. Every check the vendor would make on a UserID, Nick or
//! FaceUrl is made here first, so a bad event costs no API call.

use serde_json::Value;

use crate::chat::api::{self, MAX_PROFILE_FIELD_BYTES, MAX_USER_ID_BYTES};

/// Payloads above this are rejected without parsing: a signup event is a few hundred bytes, and a
/// huge payload must not cost a huge allocation.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// One signup: the account to make sure of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupEvent {
    /// 1-32 bytes of `[A-Za-z0-9_-]`.
    pub user_id: String,
    /// Optional nickname, at most 500 bytes.
    pub nick: Option<String>,
    /// Optional avatar URL, at most 500 bytes.
    pub face_url: Option<String>,
}

/// How payloads are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// JSON object; fields found by JSON pointer.
    Json,
    /// The payload (trimmed of surrounding ASCII whitespace) is the UserID.
    Plain,
}

/// Why a record was not decoded. The `Display` text is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no payload (tombstone)")]
    Tombstone,
    #[error("payload is {0} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("payload is not valid UTF-8")]
    NotUtf8,
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("no UserID at JSON pointer {0}")]
    MissingUserId(String),
    #[error("{field} at JSON pointer {pointer} is not a string")]
    NotAString {
        field: &'static str,
        pointer: String,
    },
    #[error("UserID is empty")]
    EmptyUserId,
    #[error("UserID is {0} bytes, over the {MAX_USER_ID_BYTES}-byte limit")]
    UserIdTooLong(usize),
    #[error("UserID contains characters outside [A-Za-z0-9_-]")]
    UserIdCharacters,
    #[error("{field} is {len} bytes, over the {MAX_PROFILE_FIELD_BYTES}-byte limit")]
    FieldTooLong { field: &'static str, len: usize },
}

/// Decodes payloads in one format. Built once from configuration.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Payload layout.
    format: InputFormat,
    /// JSON pointer to the UserID (json format only).
    user_id_pointer: String,
    /// JSON pointer to the optional Nick.
    nick_pointer: String,
    /// JSON pointer to the optional FaceUrl.
    face_url_pointer: String,
}

impl Decoder {
    /// A decoder; pointers must be RFC 6901 JSON pointers (empty, or starting with `/`).
    pub fn new(
        format: InputFormat,
        user_id: &str,
        nick: &str,
        face_url: &str,
    ) -> Result<Self, String> {
        for (flag, p) in [
            ("--user-id-pointer", user_id),
            ("--nick-pointer", nick),
            ("--face-url-pointer", face_url),
        ] {
            if !p.starts_with('/') {
                return Err(format!(
                    "{flag} {p:?} is not a JSON pointer (it must start with '/', e.g. /UserID)"
                ));
            }
        }
        Ok(Decoder {
            format,
            user_id_pointer: user_id.to_owned(),
            nick_pointer: nick.to_owned(),
            face_url_pointer: face_url.to_owned(),
        })
    }

    /// The default JSON decoder: `/UserID`, `/Nick`, `/FaceUrl`.
    pub fn json_default() -> Self {
        Decoder::new(InputFormat::Json, "/UserID", "/Nick", "/FaceUrl")
            .expect("static pointers are valid")
    }

    /// Decodes one record's payload (`None` = tombstone).
    pub fn decode(&self, payload: Option<&[u8]>) -> Result<SignupEvent, DecodeError> {
        let payload = payload.ok_or(DecodeError::Tombstone)?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        match self.format {
            InputFormat::Plain => {
                let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
                let user_id =
                    validate_user_id(text.trim_matches(|c: char| c.is_ascii_whitespace()))?;
                Ok(SignupEvent {
                    user_id: user_id.to_owned(),
                    nick: None,
                    face_url: None,
                })
            }
            InputFormat::Json => self.decode_json(payload),
        }
    }

    fn decode_json(&self, payload: &[u8]) -> Result<SignupEvent, DecodeError> {
        let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
        // serde_json limits nesting depth (128), so hostile deep JSON is an error, not a stack overflow.
        let doc: Value =
            serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        let user_id = match doc.pointer(&self.user_id_pointer) {
            None | Some(Value::Null) => {
                return Err(DecodeError::MissingUserId(self.user_id_pointer.clone()))
            }
            Some(Value::String(s)) => validate_user_id(s)?,
            Some(_) => {
                return Err(DecodeError::NotAString {
                    field: "UserID",
                    pointer: self.user_id_pointer.clone(),
                })
            }
        };
        let nick = optional_field(&doc, "Nick", &self.nick_pointer)?;
        let face_url = optional_field(&doc, "FaceUrl", &self.face_url_pointer)?;
        Ok(SignupEvent {
            user_id: user_id.to_owned(),
            nick,
            face_url,
        })
    }
}

fn validate_user_id(id: &str) -> Result<&str, DecodeError> {
    if id.is_empty() {
        return Err(DecodeError::EmptyUserId);
    }
    if id.len() > MAX_USER_ID_BYTES {
        return Err(DecodeError::UserIdTooLong(id.len()));
    }
    if !api::is_valid_user_id(id) {
        return Err(DecodeError::UserIdCharacters);
    }
    Ok(id)
}

/// An optional string field: absent, null and "" all mean "not given".
fn optional_field(
    doc: &Value,
    field: &'static str,
    pointer: &str,
) -> Result<Option<String>, DecodeError> {
    match doc.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_PROFILE_FIELD_BYTES => {
            Err(DecodeError::FieldTooLong {
                field,
                len: s.len(),
            })
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DecodeError::NotAString {
            field,
            pointer: pointer.to_owned(),
        }),
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
