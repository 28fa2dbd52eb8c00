//! The `${…}` expression language shared by converters, plus value typing, timestamp parsing
//! and byte-slice expressions.
//!
//! # Templates
//!
//! A [`Template`] is literal text with zero or more placeholders `${expr}`. Each placeholder is
//! resolved against a JSON message:
//!
//! 1. if the whole `expr` is a top-level key of the object, that key's value is used
//!    (so `${a.b}` reads the key `"a.b"` when it exists, and keys may contain spaces);
//! 2. otherwise `expr` is a [`JsonPath`] (jsonpath-rw dialect) written without the leading
//!    `$.`: `data.temp`, `sensors[0].value`, `items[:].v`, `[0]`, `a.*.b`, `a..b`,
//!    `['key with spaces']`, `[-1]`, `[1:3]`. The first match is used.
//!
//! ```
//! use tbgw::expr::Template;
//! let t = Template::parse("${serial}-${data.temp}")?;
//! let msg = serde_json::json!({"serial": "SN-1", "data": {"temp": 21.5}});
//! assert_eq!(t.render(&msg).as_deref(), Some("SN-1-21.5"));
//! # Ok::<(), tbgw::expr::ExprError>(())
//! ```
//!
//! A template without `${` is a constant. A placeholder without a match makes the whole
//! rendering `None`.
//!
//! # Typing, timestamps, byte slices
//!
//! * [`convert`] types a JSON value as a datapoint's `type` ([`DataType`]) asks:
//!   `string`, `integer`, `double`, `boolean`, `raw` or `json`.
//! * [`parse_timestamp`] turns epoch seconds/milliseconds or date-time text into milliseconds.
//! * [`ByteSlices`] renders `"[0:2]cm [2:]A"` style expressions over a byte payload.

mod convert;
mod path;
mod slices;
mod template;
mod timestamp;

pub use convert::{convert, convert_owned, ConvertError, DataType};
pub use path::JsonPath;
pub use slices::ByteSlices;
pub use template::{Encoding, Template};
pub use timestamp::{parse_timestamp, parse_timestamp_str, TsOptions};

/// An error in the syntax of a template, a JSONPath or a byte-slice expression.
///
/// Positions are byte offsets into the text named in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExprError {
    /// A `${` without a closing `}`.
    #[error("unterminated placeholder: `${{` at byte {pos} of template {template:?} has no closing `}}`")]
    UnterminatedPlaceholder {
        /// The whole template text.
        template: String,
        /// Byte offset of the `${`.
        pos: usize,
    },
    /// A placeholder with nothing (or only whitespace) inside: `${}`.
    #[error("empty placeholder `${{}}` at byte {pos} of template {template:?}")]
    EmptyPlaceholder {
        /// The whole template text.
        template: String,
        /// Byte offset of the `${`.
        pos: usize,
    },
    /// A placeholder whose expression is not a valid path.
    #[error("invalid placeholder at byte {pos} of template {template:?}: {source}")]
    InvalidPlaceholder {
        /// The whole template text.
        template: String,
        /// Byte offset of the `${`.
        pos: usize,
        /// What is wrong with the expression.
        source: Box<ExprError>,
    },
    /// A JSONPath syntax error.
    #[error("invalid path {path:?} at byte {pos}: {reason}")]
    InvalidPath {
        /// The path text.
        path: String,
        /// Byte offset of the problem within `path`.
        pos: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A byte-slice expression syntax error.
    #[error("invalid byte slice expression {text:?} at byte {pos}: {reason}")]
    InvalidSlice {
        /// The whole expression text.
        text: String,
        /// Byte offset of the problem within `text`.
        pos: usize,
        /// What is wrong.
        reason: &'static str,
    },
}
