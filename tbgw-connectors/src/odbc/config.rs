//! The connector file (`odbc.json`): upstream's keys, defaults, and the checks `tbgw check`
//! reports with the file and key path. Every expression string is parsed here, once, with
//! [`tbgw::eval`]; one it cannot read is a configuration error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use tbgw::config::ConfigError;
use tbgw::eval::{Expr, Val};

/// The content of an `odbc.json` connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OdbcFile {
    /// How to reach the database.
    pub connection: ConnectionFile,
    /// pyodbc module attributes: `lowercase` (column names lowercased) is applied,
    /// `pooling: false` is what tbgw does anyway; others (`pooling: true`, `native_uuid`) are
    /// reported as ignored (unixODBC pools per its own `odbcinst.ini`).
    #[serde(default)]
    pub pyodbc: Option<Json>,
    /// What to read and how often.
    pub polling: PollingFile,
    /// Rows to device data.
    pub mapping: MappingFile,
    /// RPCs to stored procedures and queries.
    #[serde(default)]
    pub server_side_rpc: RpcFile,
    /// A custom (Python) converter class: not supported.
    pub converter: Option<Json>,
    /// Beyond upstream: where the persistent iterator is kept (relative to this file).
    /// Default: `<this file's name without .json>.iterator.json` beside it.
    pub iterator_file: Option<String>,
}

/// `connection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionFile {
    /// The ODBC connection string (`Driver={...};Server=...`).
    pub str: String,
    /// `autocommit` and `timeout` (login timeout, seconds; 0 = the driver's default).
    #[serde(default)]
    pub attributes: Attributes,
    /// The encoding of text parameters written to the database (pyodbc's `setencoding`):
    /// UTF-8 (default) or a single- or multi-byte codec by its Python or WHATWG name
    /// (`latin-1`, `cp1252`, `shift_jis`...). UTF-16/32 (pyodbc: bind as wide text) are
    /// reported as ignored: tbgw binds narrow text.
    pub encoding: Option<String>,
    /// `{char, wchar, metadata}` decodings of text read (pyodbc's `setdecoding`): `char` as
    /// `encoding`; `wchar` and `metadata` apply to wide (UTF-16) data, which tbgw never
    /// fetches — values other than UTF-8/UTF-16 are reported as ignored.
    pub decoding: Option<Json>,
    /// Reconnect after a database error (default true).
    #[serde(default = "yes")]
    pub reconnect: bool,
    /// Seconds between reconnect attempts (default 60): the ceiling of tbgw's backoff.
    #[serde(default = "sixty")]
    pub reconnect_period: f64,
}

/// `connection.attributes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attributes {
    /// Autocommit (default true, as pyodbc's `autocommit=True` in upstream's sample; pyodbc's
    /// own default is false, which leaves RPC writes uncommitted).
    pub autocommit: Option<bool>,
    /// Login timeout in seconds; 0 or absent: the driver's default.
    pub timeout: Option<f64>,
}

fn yes() -> bool {
    true
}
fn sixty() -> f64 {
    60.0
}

/// `polling`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollingFile {
    /// The query; its one `?` is bound to the iterator's value.
    pub query: String,
    /// Seconds between polls that found nothing new (default 60).
    #[serde(default = "sixty")]
    pub period: f64,
    /// The column that orders the rows.
    pub iterator: IteratorFile,
    /// Beyond upstream: rows fetched per round trip and sent per storage batch (default 1000).
    pub batch_size: Option<usize>,
}

/// `polling.iterator`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IteratorFile {
    /// The iterator column (a column of the query's result).
    pub column: String,
    /// A query whose first column of the first row is the initial value.
    pub query: Option<String>,
    /// The initial value.
    pub value: Option<Json>,
    /// Keep the value across restarts (default **true**; upstream: false). `save` is the old
    /// name, still in upstream's docs.
    #[serde(alias = "save")]
    pub persistent: Option<bool>,
}

/// `mapping`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingFile {
    /// Device name and type.
    pub device: DeviceFile,
    /// Attributes: `"*"` or a list.
    pub attributes: Option<Columns>,
    /// Time series: `"*"` or a list.
    pub timeseries: Option<Columns>,
    /// Accepted, not used (tbgw's `reportStrategy` does this).
    pub send_data_only_on_change: Option<bool>,
}

/// `mapping.device`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceFile {
    /// An expression over the row's columns.
    pub name: String,
    /// An expression; a bare name that is no column of the row is the type itself
    /// (upstream's sample `"postgres"`). Default `default`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `"*"` or a list of datapoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Columns {
    /// `"*"`: every column.
    All(String),
    /// The datapoints.
    List(Vec<ColumnItem>),
}

/// One datapoint of a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ColumnItem {
    /// A column name: the key and the value.
    Column(String),
    /// `{name | nameExpression, column | value}`.
    Item(ItemFile),
}

/// `{name | nameExpression, column | value}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFile {
    /// The key.
    pub name: Option<String>,
    /// An expression for the key.
    pub name_expression: Option<String>,
    /// The column holding the value.
    pub column: Option<String>,
    /// An expression for the value.
    pub value: Option<String>,
}

/// `serverSideRpc`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcFile {
    /// Run methods not listed: `params` is `{query, args}` (default false).
    #[serde(default)]
    pub enable_unknown_rpc: bool,
    /// A listed method's keys may be overridden by the request's `params` (default false).
    #[serde(default)]
    pub override_rpc_config: bool,
    /// The methods.
    #[serde(default)]
    pub methods: Vec<MethodFile>,
}

/// One method: a procedure name or `{name, args, query, result}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MethodFile {
    /// A stored procedure called without arguments.
    Name(String),
    /// A procedure or query with arguments.
    Full(RpcMethod),
}

/// A configured RPC method (also the shape of an unknown or overriding request's `params`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RpcMethod {
    /// The method name (the procedure name when there is no `query`).
    #[serde(default)]
    pub name: String,
    /// Arguments bound to the procedure's or query's `?`s.
    #[serde(default)]
    pub args: Vec<Json>,
    /// Obsolete name of `args`.
    #[serde(default)]
    pub params: Vec<Json>,
    /// A query run instead of a procedure.
    #[serde(default)]
    pub query: String,
    /// Answer with the first row of the result (default false: `{"success": true}`).
    #[serde(default)]
    pub result: bool,
}

/// A datapoint, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Datapoint {
    /// The key.
    pub key: KeySpec,
    /// The value.
    pub value: ValueSpec,
}

/// A datapoint's key.
#[derive(Debug, Clone)]
pub enum KeySpec {
    /// A fixed key.
    Fixed(String),
    /// `nameExpression`.
    Expr(Expr),
}

/// A datapoint's value.
#[derive(Debug, Clone)]
pub enum ValueSpec {
    /// A column.
    Column(String),
    /// An expression (`value`).
    Expr(Expr),
}

/// `"*"` or datapoints.
#[derive(Debug, Clone)]
pub enum Points {
    /// Every non-NULL column.
    All,
    /// These.
    List(Vec<Datapoint>),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct OdbcConfig {
    /// The connection string.
    pub connection_string: String,
    /// Autocommit.
    pub autocommit: bool,
    /// How text parameters are encoded (`connection.encoding`); `None`: UTF-8.
    pub param_encoding: Option<&'static encoding_rs::Encoding>,
    /// How narrow text read is decoded (`connection.decoding.char`); `None`: UTF-8.
    pub char_decoding: Option<&'static encoding_rs::Encoding>,
    /// Column names lowercased (`pyodbc.lowercase`).
    pub lowercase: bool,
    /// Login timeout.
    pub login_timeout: Option<u32>,
    /// Reconnect after errors.
    pub reconnect: bool,
    /// Ceiling of the reconnect backoff.
    pub reconnect_period: Duration,
    /// The polling query.
    pub query: String,
    /// Sleep between polls that found nothing.
    pub period: Duration,
    /// Rows per fetch and per storage batch.
    pub batch_size: usize,
    /// The iterator column.
    pub iterator_column: String,
    /// Initial iterator value.
    pub iterator_value: Option<Val>,
    /// Initial iterator query.
    pub iterator_query: Option<String>,
    /// Persistent iterator.
    pub persistent: bool,
    /// The iterator file.
    pub iterator_file: PathBuf,
    /// Device name.
    pub device_name: Expr,
    /// Device type (`None`: `default`).
    pub device_type: Option<Expr>,
    /// Attributes.
    pub attributes: Points,
    /// Time series.
    pub timeseries: Points,
    /// RPC settings.
    pub rpc: RpcConfig,
}

/// The validated `serverSideRpc`.
#[derive(Debug, Clone, Default)]
pub struct RpcConfig {
    /// Run methods not listed.
    pub enable_unknown: bool,
    /// Let requests override a listed method's keys.
    pub override_config: bool,
    /// Listed methods by name.
    pub methods: Vec<RpcMethod>,
}

/// Default rows per fetch / storage batch.
pub const DEFAULT_BATCH: usize = 1000;
/// Largest accepted `batchSize`.
pub const MAX_BATCH: usize = 100_000;

fn parse_expr(file: &Path, key: &str, src: &str) -> Result<Expr, ConfigError> {
    Expr::parse(src).map_err(|e| ConfigError::new(file, key, e.to_string()))
}

fn points(file: &Path, key: &str, c: Option<Columns>) -> Result<Points, ConfigError> {
    match c {
        None => Ok(Points::List(Vec::new())),
        Some(Columns::All(s)) if s == "*" => Ok(Points::All),
        Some(Columns::All(s)) => Err(ConfigError::new(
            file,
            key,
            format!("expected \"*\" or a list, found {s:?}"),
        )),
        Some(Columns::List(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let k = format!("{key}[{i}]");
                out.push(match item {
                    ColumnItem::Column(c) if c == "*" => {
                        return Err(ConfigError::new(
                            file,
                            k,
                            "\"*\" inside a list; write \"*\" instead of the list",
                        ))
                    }
                    ColumnItem::Column(c) => Datapoint {
                        key: KeySpec::Fixed(c.clone()),
                        value: ValueSpec::Column(c),
                    },
                    ColumnItem::Item(it) => {
                        let key = match (it.name, it.name_expression) {
                            (_, Some(e)) => {
                                KeySpec::Expr(parse_expr(file, &format!("{k}.nameExpression"), &e)?)
                            }
                            (Some(n), None) if !n.is_empty() => KeySpec::Fixed(n),
                            _ => {
                                return Err(ConfigError::new(
                                    file,
                                    k,
                                    "needs `name` or `nameExpression`",
                                ))
                            }
                        };
                        let value = match (it.column, it.value) {
                            (Some(c), _) => ValueSpec::Column(c),
                            (None, Some(v)) => {
                                ValueSpec::Expr(parse_expr(file, &format!("{k}.value"), &v)?)
                            }
                            (None, None) => {
                                return Err(ConfigError::new(file, k, "needs `column` or `value`"))
                            }
                        };
                        Datapoint { key, value }
                    }
                });
            }
            Ok(Points::List(out))
        }
    }
}

fn is_utf16_or_32(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace(['-', '_'], "");
    n.starts_with("utf16") || n.starts_with("utf32") || n == "ucs2" || n == "ucs4"
}

/// A codec by its Python name (`latin-1`, `cp1252`, `iso8859_15`, `shift_jis`...) or WHATWG
/// label; `None` for UTF-8. Python's `latin-1` is read as windows-1252 (the WHATWG rule: the
/// two differ only in the C1 controls 0x80–0x9F).
fn codec(
    file: &Path,
    key: &str,
    name: &str,
) -> Result<Option<&'static encoding_rs::Encoding>, ConfigError> {
    if is_utf8(name) {
        return Ok(None);
    }
    let lower = name.trim().to_ascii_lowercase();
    let python = lower.replace('_', "-");
    let candidates = [
        lower.clone(),
        python.clone(),
        python.replace("latin-1", "latin1"),
        // Python's `iso8859-15`, `cp1251`, `koi8-r`, `euc-jp`...
        python.replace("iso8859-", "iso-8859-"),
        python.replace("cp", "windows-"),
        python.replace('-', ""),
    ];
    for c in &candidates {
        if let Some(e) = encoding_rs::Encoding::for_label(c.as_bytes()) {
            if e == encoding_rs::UTF_8 {
                return Ok(None);
            }
            return Ok(Some(e));
        }
    }
    Err(ConfigError::new(
        file,
        key,
        format!("unknown encoding {name:?} (use a Python or WHATWG name: utf-8, latin-1, cp1252, shift_jis...)"),
    ))
}

fn is_utf8(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().replace(['-', '_'], "").as_str(),
        "utf8" | ""
    )
}

impl OdbcFile {
    /// Validates and converts; `file` names the connector file in errors and is where the
    /// iterator file lives. Accepted keys tbgw does not act on are appended to `ignored`.
    pub fn into_config(
        self,
        file: &Path,
        ignored: &mut Vec<String>,
    ) -> Result<OdbcConfig, ConfigError> {
        if self.converter.is_some() {
            return Err(ConfigError::new(
                file,
                "converter",
                "custom (Python) converters are not supported; map columns with `mapping`",
            ));
        }
        let c = &self.connection;
        if c.str.trim().is_empty() {
            return Err(ConfigError::new(
                file,
                "connection.str",
                "empty connection string",
            ));
        }
        if !(c.reconnect_period.is_finite() && c.reconnect_period > 0.0) {
            return Err(ConfigError::new(
                file,
                "connection.reconnectPeriod",
                "must be a positive number of seconds",
            ));
        }
        let param_encoding = match &c.encoding {
            Some(e) if is_utf16_or_32(e) => {
                ignored.push("connection.encoding".into());
                None
            }
            Some(e) => codec(file, "connection.encoding", e)?,
            None => None,
        };
        let mut char_decoding = None;
        match &c.decoding {
            None => {}
            Some(Json::Object(m)) => {
                for (k, v) in m {
                    let Some(name) = v.as_str() else {
                        return Err(ConfigError::new(
                            file,
                            format!("connection.decoding.{k}"),
                            "must be the name of an encoding",
                        ));
                    };
                    match k.as_str() {
                        "char" if is_utf16_or_32(name) => {
                            ignored.push("connection.decoding.char".into());
                        }
                        "char" => {
                            char_decoding = codec(file, "connection.decoding.char", name)?;
                        }
                        // Wide data: tbgw reads text through the narrow interface only.
                        "wchar" | "metadata" if is_utf8(name) || is_utf16_or_32(name) => {}
                        _ => ignored.push(format!("connection.decoding.{k}")),
                    }
                }
            }
            Some(_) => ignored.push("connection.decoding".into()),
        }
        let mut lowercase = false;
        match &self.pyodbc {
            None | Some(Json::Null) => {}
            Some(Json::Object(m)) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        // tbgw's ODBC environment does not pool connections either.
                        ("pooling", Json::Bool(false)) => {}
                        ("lowercase", Json::Bool(b)) => lowercase = *b,
                        _ => ignored.push(format!("pyodbc.{k}")),
                    }
                }
            }
            Some(_) => ignored.push("pyodbc".into()),
        }
        if self.mapping.send_data_only_on_change == Some(true) {
            ignored.push("mapping.sendDataOnlyOnChange".into());
        }
        let login_timeout = match c.attributes.timeout {
            Some(t) if t.is_finite() && t > 0.0 => Some(t.ceil().min(u32::MAX as f64) as u32),
            Some(t) if t.is_finite() && t == 0.0 => None,
            None => None,
            Some(_) => {
                return Err(ConfigError::new(
                    file,
                    "connection.attributes.timeout",
                    "must be a non-negative number of seconds",
                ))
            }
        };
        let p = &self.polling;
        if p.query.trim().is_empty() {
            return Err(ConfigError::new(file, "polling.query", "empty query"));
        }
        let marks = count_params(&p.query);
        if marks > 1 {
            return Err(ConfigError::new(
                file,
                "polling.query",
                format!("has {marks} `?` parameters; only one (the iterator) is bound"),
            ));
        }
        if !(p.period.is_finite() && p.period >= 0.0) {
            return Err(ConfigError::new(
                file,
                "polling.period",
                "must be a non-negative number of seconds",
            ));
        }
        let batch_size = p.batch_size.unwrap_or(DEFAULT_BATCH);
        if !(1..=MAX_BATCH).contains(&batch_size) {
            return Err(ConfigError::new(
                file,
                "polling.batchSize",
                format!("must be 1..={MAX_BATCH}"),
            ));
        }
        let it = &p.iterator;
        if it.column.is_empty() {
            return Err(ConfigError::new(
                file,
                "polling.iterator.column",
                "empty column name",
            ));
        }
        let iterator_value = it.value.as_ref().map(Val::from_json);
        if matches!(iterator_value, Some(Val::List(_))) {
            return Err(ConfigError::new(
                file,
                "polling.iterator.value",
                "must be a number or a string",
            ));
        }
        if marks == 1 && iterator_value.is_none() && it.query.is_none() {
            return Err(ConfigError::new(
                file,
                "polling.iterator",
                "needs `value` or `query` (the initial value of the iterator)",
            ));
        }
        let iterator_file = match &self.iterator_file {
            Some(p) => tbgw::config::resolve_beside(file, p),
            None => {
                let stem = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("odbc")
                    .to_string();
                file.with_file_name(format!("{stem}.iterator.json"))
            }
        };
        let device_name = parse_expr(file, "mapping.device.name", &self.mapping.device.name)?;
        let device_type = match &self.mapping.device.kind {
            Some(t) if !t.trim().is_empty() => Some(parse_expr(file, "mapping.device.type", t)?),
            _ => None,
        };
        let attributes = points(file, "mapping.attributes", self.mapping.attributes)?;
        let timeseries = points(file, "mapping.timeseries", self.mapping.timeseries)?;
        let mut methods: Vec<RpcMethod> = Vec::new();
        for (i, m) in self.server_side_rpc.methods.into_iter().enumerate() {
            let m = match m {
                MethodFile::Name(n) => RpcMethod {
                    name: n,
                    ..RpcMethod::default()
                },
                MethodFile::Full(m) => m,
            };
            if m.name.is_empty() {
                return Err(ConfigError::new(
                    file,
                    format!("serverSideRpc.methods[{i}].name"),
                    "empty method name",
                ));
            }
            if methods.iter().any(|x| x.name == m.name) {
                return Err(ConfigError::new(
                    file,
                    format!("serverSideRpc.methods[{i}].name"),
                    format!("method {:?} is listed twice", m.name),
                ));
            }
            methods.push(m);
        }
        Ok(OdbcConfig {
            connection_string: c.str.clone(),
            autocommit: c.attributes.autocommit.unwrap_or(true),
            param_encoding,
            char_decoding,
            lowercase,
            login_timeout,
            reconnect: c.reconnect,
            reconnect_period: Duration::from_secs_f64(c.reconnect_period.min(86_400.0)),
            query: p.query.clone(),
            period: Duration::from_secs_f64(p.period.min(86_400.0)),
            batch_size,
            iterator_column: it.column.clone(),
            iterator_value,
            iterator_query: it.query.clone(),
            persistent: it.persistent.unwrap_or(true),
            iterator_file,
            device_name,
            device_type,
            attributes,
            timeseries,
            rpc: RpcConfig {
                enable_unknown: self.server_side_rpc.enable_unknown_rpc,
                override_config: self.server_side_rpc.override_rpc_config,
                methods,
            },
        })
    }
}

/// The number of `?` parameter markers outside quotes and comments.
pub fn count_params(sql: &str) -> usize {
    let mut n = 0;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '?' => n += 1,
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                _ => {}
            },
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Json) -> Result<OdbcConfig, ConfigError> {
        let f: OdbcFile = serde_json::from_value(v)
            .map_err(|e| ConfigError::new("odbc.json", "", e.to_string()))?;
        f.into_config(Path::new("/etc/tbgw/odbc.json"), &mut Vec::new())
    }

    fn base() -> Json {
        json!({
            "connection": {"str": "Driver=SQLite3;Database=/tmp/x.db"},
            "polling": {"query": "SELECT * FROM t WHERE id > ? ORDER BY id", "iterator": {"column": "id", "value": 0}},
            "mapping": {"device": {"name": "'Dev ' + str(dev)", "type": "postgres"}, "timeseries": "*"}
        })
    }

    #[test]
    fn defaults() {
        let c = cfg(base()).unwrap();
        assert!(c.persistent && c.reconnect && c.autocommit);
        assert_eq!(c.period, Duration::from_secs(60));
        assert_eq!(
            c.iterator_file,
            PathBuf::from("/etc/tbgw/odbc.iterator.json")
        );
        assert_eq!(c.iterator_value, Some(Val::Int(0)));
        assert!(matches!(c.timeseries, Points::All));
        assert_eq!(
            c.device_type.as_ref().and_then(|t| t.as_name()),
            Some("postgres")
        );
    }

    #[test]
    fn encodings_by_python_and_whatwg_names() {
        let with = |enc: Json, dec: Json| {
            let mut v = base();
            v["connection"]["encoding"] = enc;
            v["connection"]["decoding"] = dec;
            let f: OdbcFile = serde_json::from_value(v).unwrap();
            let mut ignored = Vec::new();
            f.into_config(Path::new("/etc/tbgw/odbc.json"), &mut ignored)
                .map(|c| {
                    (
                        c.param_encoding.map(|e| e.name()),
                        c.char_decoding.map(|e| e.name()),
                        ignored,
                    )
                })
        };
        // Upstream's sample: UTF-8 everywhere, UTF-16LE metadata — nothing to do, nothing ignored.
        let (e, d, ignored) = with(
            json!("utf-8"),
            json!({"char": "utf-8", "wchar": "utf-8", "metadata": "utf-16le"}),
        )
        .unwrap();
        assert_eq!((e, d, ignored.len()), (None, None, 0));
        for (name, want) in [
            ("latin-1", "windows-1252"),
            ("latin1", "windows-1252"),
            ("cp1252", "windows-1252"),
            ("iso8859_15", "ISO-8859-15"),
            ("cp1251", "windows-1251"),
            ("shift_jis", "Shift_JIS"),
            ("koi8_r", "KOI8-R"),
            ("GBK", "GBK"),
        ] {
            let (e, d, _) = with(json!(name), json!({"char": name})).unwrap();
            assert_eq!((e, d), (Some(want), Some(want)), "{name}");
        }
        // Wide text: pyodbc binds/reads it as SQL_WCHAR; tbgw reads narrow text only.
        let (e, _, ignored) = with(json!("utf-16le"), json!({"wchar": "cp1252"})).unwrap();
        assert_eq!(e, None);
        assert_eq!(
            ignored,
            vec![
                "connection.encoding".to_string(),
                "connection.decoding.wchar".into()
            ]
        );
        let mut v = base();
        v["pyodbc"] = json!({"pooling": false, "lowercase": true, "native_uuid": true});
        let f: OdbcFile = serde_json::from_value(v).unwrap();
        let mut ignored = Vec::new();
        let c = f
            .into_config(Path::new("/etc/tbgw/odbc.json"), &mut ignored)
            .unwrap();
        assert!(c.lowercase);
        assert_eq!(ignored, vec!["pyodbc.native_uuid".to_string()]);
        let e = with(json!("klingon"), json!(null)).unwrap_err().to_string();
        assert!(
            e.contains("connection.encoding") && e.contains("klingon"),
            "{e}"
        );
        let e = with(json!("utf-8"), json!({"char": 5}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("connection.decoding.char"), "{e}");
    }

    #[test]
    fn bad_expressions_name_the_key() {
        let mut v = base();
        v["mapping"]["device"]["name"] = json!("__import__('os')");
        let e = cfg(v).unwrap_err().to_string();
        assert!(
            e.contains("mapping.device.name") && e.contains("__import__"),
            "{e}"
        );
        let mut v = base();
        v["mapping"]["attributes"] = json!([{"name": "a", "value": "x +"}]);
        let e = cfg(v).unwrap_err().to_string();
        assert!(e.contains("mapping.attributes[0].value"), "{e}");
        let mut v = base();
        v["mapping"]["attributes"] = json!([{"name": "a"}]);
        assert!(cfg(v)
            .unwrap_err()
            .to_string()
            .contains("needs `column` or `value`"));
    }

    #[test]
    fn iterator_needs_a_start() {
        let mut v = base();
        v["polling"]["iterator"] = json!({"column": "id"});
        assert!(cfg(v).unwrap_err().to_string().contains("polling.iterator"));
        let mut v = base();
        v["polling"]["query"] = json!("SELECT * FROM t WHERE a > ? AND b > ?");
        assert!(cfg(v).unwrap_err().to_string().contains("2 `?`"));
        let mut v = base();
        v["polling"]["iterator"]["save"] = json!(false);
        assert!(!cfg(v).unwrap().persistent);
    }

    #[test]
    fn params_outside_quotes() {
        assert_eq!(
            count_params("SELECT '?' , \"a?\" FROM t WHERE x > ? -- why?\n"),
            1
        );
    }

    #[test]
    fn rpc_methods() {
        let mut v = base();
        v["serverSideRpc"] = json!({"methods": ["p1", {"name": "p2", "args": ["One", 2, 3.0]}]});
        let c = cfg(v).unwrap();
        assert_eq!(c.rpc.methods.len(), 2);
        assert_eq!(
            c.rpc.methods[1].args,
            vec![json!("One"), json!(2), json!(3.0)]
        );
        let mut v = base();
        v["serverSideRpc"] = json!({"methods": ["p1", "p1"]});
        assert!(cfg(v).unwrap_err().to_string().contains("listed twice"));
    }
}
