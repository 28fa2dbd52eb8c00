//! OCPP-J frames: the JSON arrays every OCPP version sends over its WebSocket, and the
//! subprotocol names that select the version.
//!
//! | type | frame |
//! |---|---|
//! | 2 CALL | `[2, "<id>", "<Action>", {payload}]` |
//! | 3 CALLRESULT | `[3, "<id>", {payload}]` |
//! | 4 CALLERROR | `[4, "<id>", "<errorCode>", "<description>", {details}]` |
//! | 5 CALLRESULTERROR (2.1) | `[5, "<id>", "<errorCode>", "<description>", {details}]` |
//! | 6 SEND (2.1) | `[6, "<id>", "<Action>", {payload}]` (no answer) |
//!
//! [`decode`] never panics: whatever arrives is a [`Frame`] or a [`FrameError`] that says which
//! CALLERROR answers it (with the message id when one could be read).

use serde_json::{json, Value as Json};

/// An OCPP version, chosen per charge point by the WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// OCPP 1.6J, subprotocol `ocpp1.6`.
    V16,
    /// OCPP 2.0.1, subprotocol `ocpp2.0.1`.
    V201,
    /// OCPP 2.1, subprotocol `ocpp2.1`.
    V21,
}

impl Version {
    /// Every version, in the order the central system prefers them when a charge point offers
    /// several: the newest first.
    pub const ALL: [Version; 3] = [Version::V21, Version::V201, Version::V16];

    /// The WebSocket subprotocol name.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Version::V16 => "ocpp1.6",
            Version::V201 => "ocpp2.0.1",
            Version::V21 => "ocpp2.1",
        }
    }

    /// The version of a subprotocol name (exact, as the specifications write them).
    pub fn from_subprotocol(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.subprotocol() == s)
    }

    /// True for 2.0.1 and 2.1.
    pub fn is_2x(self) -> bool {
        !matches!(self, Version::V16)
    }

    /// The CALLERROR code for a payload that is not a JSON object (1.6J spells it
    /// `FormationViolation`, 2.x `FormatViolation`).
    pub fn format_violation(self) -> &'static str {
        if self.is_2x() {
            "FormatViolation"
        } else {
            "FormationViolation"
        }
    }

    /// The CALLERROR code for a required field that is missing (1.6J's schema spells it
    /// `OccurenceConstraintViolation`).
    pub fn occurrence_violation(self) -> &'static str {
        if self.is_2x() {
            "OccurrenceConstraintViolation"
        } else {
            "OccurenceConstraintViolation"
        }
    }

    /// The CALLERROR code for a frame that is not an OCPP-J message at all.
    pub fn framework_error(self) -> &'static str {
        if self.is_2x() {
            "RpcFrameworkError"
        } else {
            "ProtocolError"
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.subprotocol())
    }
}

/// The version to speak with a charge point: the first of `preferred` (the central system's
/// order) that the charge point offers in its `Sec-WebSocket-Protocol` header values. None
/// when it offers none of them (or nothing).
pub fn negotiate<'a>(
    offered: impl IntoIterator<Item = &'a str>,
    preferred: &[Version],
) -> Option<Version> {
    let offered: Vec<&str> = offered
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    preferred
        .iter()
        .copied()
        .find(|v| offered.iter().any(|o| *o == v.subprotocol()))
}

/// One OCPP-J message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A request (message type 2).
    Call {
        /// The message id the answer repeats.
        id: String,
        /// The action (`BootNotification`, ...).
        action: String,
        /// The request's payload.
        payload: Json,
    },
    /// A successful answer (message type 3).
    CallResult {
        /// The id of the CALL it answers.
        id: String,
        /// The answer's payload.
        payload: Json,
    },
    /// An error answer (message type 4, or 5 = CALLRESULTERROR of 2.1).
    CallError {
        /// The id of the CALL it answers.
        id: String,
        /// The error code (`NotImplemented`, `FormatViolation`, ...).
        code: String,
        /// The description.
        description: String,
        /// The details object.
        details: Json,
    },
    /// An unconfirmed message (message type 6, OCPP 2.1): handled like a CALL, never answered.
    Send {
        /// The message id.
        id: String,
        /// The action.
        action: String,
        /// The payload.
        payload: Json,
    },
}

/// A frame that cannot be decoded, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct FrameError {
    /// The message id when one could be read (the CALLERROR repeats it), else None (answered
    /// with id `-1`, as OCPP 2.0.1 says).
    pub id: Option<String>,
    /// True when the frame was a CALL, so a CALLERROR is due; answers and unknown types get
    /// no reply.
    pub is_call: bool,
    /// What is wrong.
    pub reason: String,
}

/// The longest message id OCPP allows (36 characters, a UUID).
pub const MAX_ID_LEN: usize = 36;

fn err(id: Option<String>, is_call: bool, reason: impl Into<String>) -> FrameError {
    FrameError {
        id,
        is_call,
        reason: reason.into(),
    }
}

/// Decodes one text message.
pub fn decode(text: &str) -> Result<Frame, FrameError> {
    let v: Json =
        serde_json::from_str(text).map_err(|e| err(None, true, format!("not JSON: {e}")))?;
    let Json::Array(items) = v else {
        return Err(err(None, true, "not a JSON array"));
    };
    let Some(kind) = items.first().and_then(Json::as_u64) else {
        return Err(err(
            None,
            true,
            "the first element is not a message type number",
        ));
    };
    let id = match items.get(1) {
        Some(Json::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => s.clone(),
        Some(Json::String(s)) if s.len() > MAX_ID_LEN => {
            return Err(err(
                None,
                kind == 2,
                "the message id is longer than 36 characters",
            ))
        }
        _ => {
            return Err(err(
                None,
                kind == 2,
                "the message id is not a non-empty string",
            ))
        }
    };
    match kind {
        2 | 6 => {
            let is_call = kind == 2;
            if items.len() != 4 {
                return Err(err(
                    Some(id),
                    is_call,
                    format!("a CALL has 4 elements, not {}", items.len()),
                ));
            }
            let Some(action) = items
                .get(2)
                .and_then(Json::as_str)
                .filter(|a| !a.is_empty())
            else {
                return Err(err(Some(id), is_call, "the action is not a string"));
            };
            let action = action.to_owned();
            let payload = items.into_iter().nth(3).unwrap_or(Json::Null);
            Ok(if is_call {
                Frame::Call {
                    id,
                    action,
                    payload,
                }
            } else {
                Frame::Send {
                    id,
                    action,
                    payload,
                }
            })
        }
        3 => {
            if items.len() != 3 {
                return Err(err(Some(id), false, "a CALLRESULT has 3 elements"));
            }
            let payload = items.into_iter().nth(2).unwrap_or(Json::Null);
            Ok(Frame::CallResult { id, payload })
        }
        4 | 5 => {
            if !(4..=5).contains(&items.len()) {
                return Err(err(Some(id), false, "a CALLERROR has 5 elements"));
            }
            let code = items
                .get(2)
                .and_then(Json::as_str)
                .unwrap_or("GenericError");
            let description = items.get(3).and_then(Json::as_str).unwrap_or("");
            Ok(Frame::CallError {
                id,
                code: code.to_owned(),
                description: description.to_owned(),
                details: items.get(4).cloned().unwrap_or_else(|| json!({})),
            })
        }
        other => Err(err(
            Some(id),
            false,
            format!("unknown message type {other}"),
        )),
    }
}

/// Encodes a frame as text.
pub fn encode(frame: &Frame) -> String {
    let v = match frame {
        Frame::Call {
            id,
            action,
            payload,
        } => json!([2, id, action, payload]),
        Frame::CallResult { id, payload } => json!([3, id, payload]),
        Frame::CallError {
            id,
            code,
            description,
            details,
        } => json!([4, id, code, description, details]),
        Frame::Send {
            id,
            action,
            payload,
        } => json!([6, id, action, payload]),
    };
    v.to_string()
}

/// A CALLERROR frame.
pub fn call_error(id: &str, code: &str, description: &str) -> Frame {
    Frame::CallError {
        id: id.to_owned(),
        code: code.to_owned(),
        description: description.to_owned(),
        details: json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_three_frames() {
        assert_eq!(
            decode(r#"[2,"19223201","BootNotification",{"reason":"PowerUp"}]"#),
            Ok(Frame::Call {
                id: "19223201".into(),
                action: "BootNotification".into(),
                payload: json!({"reason": "PowerUp"})
            })
        );
        assert_eq!(
            decode(r#"[3,"a",{"currentTime":"x"}]"#),
            Ok(Frame::CallResult {
                id: "a".into(),
                payload: json!({"currentTime": "x"})
            })
        );
        assert_eq!(
            decode(r#"[4,"a","NotImplemented","no",{}]"#),
            Ok(Frame::CallError {
                id: "a".into(),
                code: "NotImplemented".into(),
                description: "no".into(),
                details: json!({})
            })
        );
        assert!(matches!(
            decode(r#"[5,"a","GenericError","",{}]"#),
            Ok(Frame::CallError { .. })
        ));
        assert!(matches!(
            decode(r#"[6,"a","NotifyPeriodicEventStream",{}]"#),
            Ok(Frame::Send { .. })
        ));
    }

    #[test]
    fn round_trips() {
        for f in [
            Frame::Call {
                id: "1".into(),
                action: "Reset".into(),
                payload: json!({"type": "Soft"}),
            },
            Frame::CallResult {
                id: "1".into(),
                payload: json!({}),
            },
            call_error("1", "FormatViolation", "bad"),
        ] {
            assert_eq!(decode(&encode(&f)), Ok(f));
        }
    }

    #[test]
    fn malformed_frames_are_errors_with_the_id_when_readable() {
        let e = decode("{not json").unwrap_err();
        assert_eq!((e.id, e.is_call), (None, true));
        assert_eq!(decode("{}").unwrap_err().id, None);
        assert_eq!(decode("[]").unwrap_err().id, None);
        assert_eq!(decode(r#"["2","x","A",{}]"#).unwrap_err().id, None);
        assert_eq!(decode(r#"[2,7,"A",{}]"#).unwrap_err().id, None);
        let e = decode(r#"[2,"x",{}]"#).unwrap_err();
        assert_eq!((e.id.as_deref(), e.is_call), (Some("x"), true));
        let e = decode(r#"[2,"x",5,{}]"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("x"));
        let e = decode(r#"[9,"x",{}]"#).unwrap_err();
        assert!(!e.is_call);
        let long = format!(r#"[2,"{}","A",{{}}]"#, "x".repeat(37));
        assert!(decode(&long).is_err());
    }

    #[test]
    fn negotiation_takes_the_newest_offered_version() {
        let all = Version::ALL;
        assert_eq!(negotiate(["ocpp1.6"], &all), Some(Version::V16));
        assert_eq!(negotiate(["ocpp1.6, ocpp2.0.1"], &all), Some(Version::V201));
        assert_eq!(negotiate(["ocpp1.6", "ocpp2.1"], &all), Some(Version::V21));
        assert_eq!(negotiate(["ocpp1.5", "ocpp2.0"], &all), None);
        assert_eq!(negotiate([], &all), None);
        assert_eq!(negotiate(["ocpp2.1"], &[Version::V16]), None);
    }
}
