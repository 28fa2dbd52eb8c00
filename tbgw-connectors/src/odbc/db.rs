//! The database side: a worker thread that owns one ODBC connection and runs what the async
//! connector asks (connect, the iterator's start query, polls streamed in batches, RPC
//! statements). ODBC calls block, so they never run on the async runtime.
//!
//! Values are bound as text buffers and typed by the column's SQL type: integer types become
//! integers, `REAL`/`FLOAT`/`DOUBLE` floats, `DECIMAL`/`NUMERIC` integers when their scale is 0
//! and floats otherwise, `BIT` booleans, everything else (text, dates, times, timestamps) text.
//! SQL NULL is [`Val::None`].

use std::sync::Arc;

use odbc_api::buffers::TextRowSet;
use odbc_api::parameter::InputParameter;
use odbc_api::{Connection, ConnectionOptions, Cursor, DataType, IntoParameter, ResultSetMetadata};
use serde_json::Value as Json;
use tbgw::downlink::{RpcError, RpcResponder};
use tbgw::eval::Val;
use tbgw::model::{now_millis, DeviceData};
use tokio::sync::{mpsc, oneshot};

use super::config::OdbcConfig;
use super::downlink::Statement;
use super::uplink::{convert_row, Columns, RowReport};

/// Longest text value read (bytes); longer values are cut and counted.
pub const MAX_TEXT: usize = 4096;

/// A database error; `lost` when the connection is gone (reconnect).
#[derive(Debug, Clone)]
pub struct DbError {
    /// The driver's message.
    pub msg: String,
    /// The connection must be opened again.
    pub lost: bool,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// One batch of converted rows.
#[derive(Debug)]
pub struct Batch {
    /// Device data, one per row that converted.
    pub data: Vec<DeviceData>,
    /// The iterator column's value in the batch's last row.
    pub last: Val,
    /// Rows in the batch.
    pub rows: u64,
    /// NULL values skipped.
    pub nulls: u64,
    /// Values cut at [`MAX_TEXT`].
    pub truncated: u64,
    /// Problems converting rows.
    pub errors: Vec<String>,
}

/// What a poll streams back.
#[derive(Debug)]
pub enum PollEvent {
    /// Rows.
    Batch(Batch),
    /// The poll ended.
    End(Result<(), DbError>),
}

/// A request to the worker.
#[derive(Debug)]
pub enum Cmd {
    /// Open the connection (if closed).
    Connect(oneshot::Sender<Result<(), DbError>>),
    /// First column of the first row of a query (`None`: no row or NULL).
    Scalar(String, oneshot::Sender<Result<Val, DbError>>),
    /// Run the polling query with the iterator's value.
    Poll(Val, mpsc::Sender<PollEvent>),
    /// Run an RPC statement and answer its responder.
    Rpc(Statement, RpcResponder),
}

/// The handle of a worker thread; dropping it ends the thread after its current request.
#[derive(Debug)]
pub struct Worker {
    tx: mpsc::Sender<Cmd>,
}

impl Worker {
    /// Starts a worker thread named `name`.
    pub fn spawn(name: &str, cfg: Arc<OdbcConfig>) -> std::io::Result<Worker> {
        let (tx, rx) = mpsc::channel(64);
        std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || run(cfg, rx))?;
        Ok(Worker { tx })
    }

    /// Sends a request; `false` when the thread is gone.
    pub async fn send(&self, cmd: Cmd) -> bool {
        self.tx.send(cmd).await.is_ok()
    }
}

fn err(e: odbc_api::Error, lost: bool) -> DbError {
    DbError {
        msg: e.to_string(),
        lost,
    }
}

fn connect(cfg: &OdbcConfig) -> Result<Connection<'static>, DbError> {
    let env = odbc_api::environment().map_err(|e| err(e, true))?;
    let conn = env
        .connect_with_connection_string(
            &cfg.connection_string,
            ConnectionOptions {
                login_timeout_sec: cfg.login_timeout,
                ..ConnectionOptions::default()
            },
        )
        .map_err(|e| err(e, true))?;
    conn.set_autocommit(cfg.autocommit)
        .map_err(|e| err(e, true))?;
    Ok(conn)
}

/// Whether the connection still works after an error.
fn is_lost(conn: &Connection<'_>) -> bool {
    conn.is_dead().unwrap_or(true)
}

fn run(cfg: Arc<OdbcConfig>, mut rx: mpsc::Receiver<Cmd>) {
    let mut conn: Option<Connection<'static>> = None;
    while let Some(cmd) = rx.blocking_recv() {
        if conn.is_none() {
            match connect(&cfg) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    match cmd {
                        Cmd::Connect(r) => drop(r.send(Err(e))),
                        Cmd::Scalar(_, r) => drop(r.send(Err(e))),
                        Cmd::Poll(_, out) => drop(out.blocking_send(PollEvent::End(Err(e)))),
                        Cmd::Rpc(_, responder) => responder.err(RpcError::Unreachable(format!(
                            "cannot connect to the database: {e}"
                        ))),
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        let lost = match cmd {
            Cmd::Connect(r) => {
                let _ = r.send(Ok(()));
                false
            }
            Cmd::Scalar(sql, r) => {
                let res = scalar(c, &sql, cfg.char_decoding);
                let lost = res.as_ref().is_err_and(|e| e.lost);
                let _ = r.send(res);
                lost
            }
            Cmd::Poll(iter, out) => {
                let res = poll(&cfg, c, &iter, &out);
                let lost = res.as_ref().is_err_and(|e| e.lost);
                let _ = out.blocking_send(PollEvent::End(res));
                lost
            }
            Cmd::Rpc(stmt, responder) => {
                let res = rpc(&cfg, c, &stmt);
                let lost = res.as_ref().is_err_and(|e| e.lost);
                answer(stmt.reserved, stmt.with_result, res, responder);
                lost
            }
        };
        if lost {
            conn = None;
        }
    }
}

/// Binds a value: integers as BIGINT, floats as DOUBLE, booleans as BIT, text as VARCHAR,
/// None as NULL; lists as their JSON text.
/// Text is encoded with `enc` (`connection.encoding`; `None`: UTF-8).
fn param(v: &Val, enc: Option<&'static encoding_rs::Encoding>) -> Box<dyn InputParameter> {
    let text = |s: String| -> Box<dyn InputParameter> {
        match enc {
            None => Box::new(s.into_parameter()),
            Some(e) => Box::new(odbc_api::parameter::VarCharBox::from_vec(
                e.encode(&s).0.into_owned(),
            )),
        }
    };
    match v {
        Val::None => Box::new(None::<i64>.into_parameter()),
        Val::Bool(b) => Box::new(odbc_api::Bit(u8::from(*b))),
        Val::Int(i) => Box::new(*i),
        Val::Float(f) => Box::new(*f),
        Val::Str(s) => text(s.clone()),
        Val::List(_) => text(v.to_json().to_string()),
    }
}

/// Narrow text read, decoded with `dec` (`connection.decoding.char`; `None`: UTF-8, invalid
/// sequences replaced).
fn decode<'a>(
    b: &'a [u8],
    dec: Option<&'static encoding_rs::Encoding>,
) -> std::borrow::Cow<'a, str> {
    match dec {
        None => String::from_utf8_lossy(b),
        Some(e) => e.decode_without_bom_handling(b).0,
    }
}

fn scalar(
    conn: &Connection<'_>,
    sql: &str,
    dec: Option<&'static encoding_rs::Encoding>,
) -> Result<Val, DbError> {
    let cursor = conn
        .execute(sql, (), None)
        .map_err(|e| err(e, is_lost(conn)))?;
    let Some(mut cursor) = cursor else {
        return Ok(Val::None);
    };
    let (cols, kinds) = describe(&mut cursor, false).map_err(|e| err(e, is_lost(conn)))?;
    if cols.is_empty() {
        return Ok(Val::None);
    }
    let buf = TextRowSet::for_cursor(1, &mut cursor, Some(MAX_TEXT)).map_err(|e| err(e, false))?;
    let mut block = cursor.bind_buffer(buf).map_err(|e| err(e, is_lost(conn)))?;
    let v = match block.fetch().map_err(|e| err(e, is_lost(conn)))? {
        Some(b) if b.num_rows() > 0 => typed(kinds[0], b.at(0, 0), dec),
        _ => Val::None,
    };
    Ok(v)
}

/// How a column's text is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    /// DECIMAL/NUMERIC: an integer when it reads as one, else a float.
    Number,
    Bool,
    Text,
}

fn kind_of(t: DataType) -> Kind {
    match t {
        DataType::Integer | DataType::SmallInt | DataType::BigInt | DataType::TinyInt => Kind::Int,
        DataType::Float { .. } | DataType::Real | DataType::Double => Kind::Float,
        DataType::Numeric { scale: 0, .. } | DataType::Decimal { scale: 0, .. } => Kind::Number,
        DataType::Numeric { .. } | DataType::Decimal { .. } => Kind::Float,
        DataType::Bit => Kind::Bool,
        // Codes some drivers report for integers (sqliteodbc: `BIGINT` as SQL_C_SBIGINT, -25):
        // SQL_BIGINT, SQL_TINYINT and the signed/unsigned C integer types.
        DataType::Other { data_type, .. } => match data_type.0 {
            -5 | -6 | -15 | -16 | -17 | -18 | -25 | -26 | -27 | -28 => Kind::Int,
            -7 => Kind::Bool,
            _ => Kind::Text,
        },
        _ => Kind::Text,
    }
}

fn typed(kind: Kind, bytes: Option<&[u8]>, dec: Option<&'static encoding_rs::Encoding>) -> Val {
    let Some(b) = bytes else { return Val::None };
    let text = decode(b, dec);
    let t = text.trim();
    let as_text = || Val::Str(text.to_string());
    match kind {
        Kind::Text => as_text(),
        Kind::Int => t.parse::<i64>().map(Val::Int).unwrap_or_else(|_| {
            t.parse::<f64>()
                .map(Val::Float)
                .unwrap_or_else(|_| as_text())
        }),
        Kind::Float => t
            .parse::<f64>()
            .map(Val::Float)
            .unwrap_or_else(|_| as_text()),
        Kind::Number => t.parse::<i64>().map(Val::Int).unwrap_or_else(|_| {
            t.parse::<f64>()
                .map(Val::Float)
                .unwrap_or_else(|_| as_text())
        }),
        Kind::Bool => match t {
            "1" | "true" | "TRUE" | "t" => Val::Bool(true),
            "0" | "false" | "FALSE" | "f" => Val::Bool(false),
            _ => as_text(),
        },
    }
}

/// Column names (lowercased with `pyodbc.lowercase`) and how each column is typed.
fn describe(
    cursor: &mut impl ResultSetMetadata,
    lowercase: bool,
) -> Result<(Vec<String>, Vec<Kind>), odbc_api::Error> {
    let n = cursor.num_result_cols()?;
    let mut names = Vec::with_capacity(n.max(0) as usize);
    let mut kinds = Vec::with_capacity(n.max(0) as usize);
    for i in 1..=n.max(0) as u16 {
        let name = cursor.col_name(i)?;
        names.push(if lowercase { name.to_lowercase() } else { name });
        kinds.push(kind_of(cursor.col_data_type(i)?));
    }
    Ok((names, kinds))
}

fn poll(
    cfg: &OdbcConfig,
    conn: &Connection<'_>,
    iter: &Val,
    out: &mpsc::Sender<PollEvent>,
) -> Result<(), DbError> {
    let params: Vec<Box<dyn InputParameter>> = if super::config::count_params(&cfg.query) == 1 {
        vec![param(iter, cfg.param_encoding)]
    } else {
        Vec::new()
    };
    let cursor = conn
        .execute(&cfg.query, &params[..], None)
        .map_err(|e| err(e, true))?;
    let Some(mut cursor) = cursor else {
        return Ok(());
    };
    let (names, kinds) = describe(&mut cursor, cfg.lowercase).map_err(|e| err(e, true))?;
    let cols = Columns::new(names);
    let Some(iter_at) = cols.position(&cfg.iterator_column) else {
        return Err(DbError {
            msg: format!(
                "the query's result has no iterator column {:?} (columns: {:?})",
                cfg.iterator_column,
                cols.names()
            ),
            lost: false,
        });
    };
    let buf = TextRowSet::for_cursor(cfg.batch_size, &mut cursor, Some(MAX_TEXT))
        .map_err(|e| err(e, false))?;
    let mut block = cursor.bind_buffer(buf).map_err(|e| err(e, true))?;
    let mut row = Vec::with_capacity(kinds.len());
    loop {
        let Some(set) = block.fetch().map_err(|e| err(e, true))? else {
            return Ok(());
        };
        let n = set.num_rows();
        let now = now_millis();
        let mut batch = Batch {
            data: Vec::with_capacity(n),
            last: Val::None,
            rows: n as u64,
            nulls: 0,
            truncated: 0,
            errors: Vec::new(),
        };
        for r in 0..n {
            row.clear();
            for (c, kind) in kinds.iter().enumerate() {
                if let odbc_api::buffers::Indicator::Length(len) = set.indicator_at(c, r) {
                    if len > set.max_len(c) {
                        batch.truncated += 1;
                    }
                }
                row.push(typed(*kind, set.at(c, r), cfg.char_decoding));
            }
            let mut report = RowReport::default();
            if let Some(d) = convert_row(cfg, &cols, &row, now, &mut report) {
                batch.data.push(d);
            }
            batch.nulls += report.nulls;
            batch.errors.extend(report.errors);
            batch.last = row[iter_at].clone();
        }
        if out.blocking_send(PollEvent::Batch(batch)).is_err() {
            // The connector stopped listening (cancelled or storage failed): stop reading.
            return Ok(());
        }
    }
}

/// Runs an RPC statement; `Some(row)` (an object) for `with_result`.
fn rpc(cfg: &OdbcConfig, conn: &Connection<'_>, stmt: &Statement) -> Result<Option<Json>, DbError> {
    let params: Vec<Box<dyn InputParameter>> = stmt
        .args
        .iter()
        .map(|a| param(&Val::from_json(a), cfg.param_encoding))
        .collect();
    let cursor = conn
        .execute(&stmt.sql, &params[..], None)
        .map_err(|e| err(e, is_lost(conn)))?;
    if !stmt.with_result {
        return Ok(None);
    }
    let Some(mut cursor) = cursor else {
        return Ok(Some(Json::Null));
    };
    let (names, kinds) = describe(&mut cursor, cfg.lowercase).map_err(|e| err(e, is_lost(conn)))?;
    let buf = TextRowSet::for_cursor(1, &mut cursor, Some(MAX_TEXT)).map_err(|e| err(e, false))?;
    let mut block = cursor.bind_buffer(buf).map_err(|e| err(e, is_lost(conn)))?;
    let row = match block.fetch().map_err(|e| err(e, is_lost(conn)))? {
        Some(b) if b.num_rows() > 0 => {
            let mut m = serde_json::Map::new();
            for (c, (name, kind)) in names.iter().zip(&kinds).enumerate() {
                m.insert(
                    name.clone(),
                    typed(*kind, b.at(c, 0), cfg.char_decoding).to_json(),
                );
            }
            Json::Object(m)
        }
        _ => Json::Null,
    };
    Ok(Some(row))
}

/// The answer ThingsBoard gets (upstream's shapes; errors as tbgw's `{"error", "code"}`).
fn answer(
    reserved: bool,
    with_result: bool,
    res: Result<Option<Json>, DbError>,
    responder: RpcResponder,
) {
    match (res, reserved) {
        (Ok(Some(row)), false) if with_result => responder.verbatim(row),
        (Ok(_), false) => responder.verbatim(serde_json::json!({"success": true})),
        (Ok(Some(row)), true) if with_result => {
            responder.verbatim(serde_json::json!({"result": row}))
        }
        (Ok(_), true) => responder.verbatim(serde_json::json!({"result": {"success": true}})),
        (Err(e), _) => responder.err(RpcError::Device(e.msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_by_sql_type() {
        assert_eq!(typed(Kind::Int, Some(b"42"), None), Val::Int(42));
        assert_eq!(typed(Kind::Int, None, None), Val::None);
        assert_eq!(typed(Kind::Float, Some(b"1.5e0"), None), Val::Float(1.5));
        assert_eq!(typed(Kind::Number, Some(b"12"), None), Val::Int(12));
        assert_eq!(typed(Kind::Number, Some(b"12.50"), None), Val::Float(12.5));
        assert_eq!(typed(Kind::Bool, Some(b"1"), None), Val::Bool(true));
        assert_eq!(
            typed(Kind::Text, Some(b" a "), None),
            Val::Str(" a ".into())
        );
        assert_eq!(typed(Kind::Int, Some(b"x"), None), Val::Str("x".into()));
        // `decoding.char`: latin-1 bytes; without it, invalid UTF-8 is replaced.
        let cafe = b"Caf\xe9";
        assert_eq!(
            typed(Kind::Text, Some(cafe), Some(encoding_rs::WINDOWS_1252)),
            Val::Str("Caf\u{e9}".into())
        );
        assert_eq!(
            typed(Kind::Text, Some(cafe), None),
            Val::Str("Caf\u{fffd}".into())
        );
        assert_eq!(kind_of(DataType::BigInt), Kind::Int);
        assert_eq!(
            kind_of(DataType::Decimal {
                precision: 10,
                scale: 2
            }),
            Kind::Float
        );
        assert_eq!(kind_of(DataType::Timestamp { precision: 3 }), Kind::Text);
        let sbigint = DataType::Other {
            data_type: odbc_api::sys::SqlDataType(-25),
            column_size: None,
            decimal_digits: 0,
        };
        assert_eq!(kind_of(sbigint), Kind::Int);
    }
}
