//! File content to gateway data: the uplink converter. Pure and synchronous (no I/O, no clock:
//! the time is an argument), so it is unit-tested here and fuzzed as it is.
//!
//! * csv files, and txt files with `txtFileDataView: TABLE`: the first line names the columns;
//!   each following line is a row, cut at `delimiter`, and expressions read `${Column}`.
//! * txt files with `SLICED`: expressions are `[from:to]` Python slices of the characters of
//!   the line's first field (the line up to the first `delimiter`, the whole line when there is
//!   none), as upstream's code does; an expression without brackets is a constant.
//! * json files: an object, or an array of objects, each one record; expressions are `${path}`.
//!
//! Every value is typed as its datapoint's `type` says (`string` when absent); upstream sends
//! every value as a string whatever `type` says. A time series with the key `ts` sets the
//! record's timestamp (epoch seconds or milliseconds, or date-time text) instead of being sent.

use std::time::Duration;

use serde_json::Value as Json;
use tbgw::convert::ConvertError;
use tbgw::expr::{ByteSlices, DataType, Template, TsOptions};
use tbgw::model::{DeviceData, Value};

use super::config::{DataView, DatapointConfig, PathConfig, ReadMode};

/// The file kinds the connector reads (by extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `.json`
    Json,
    /// `.txt`
    Txt,
    /// `.csv`
    Csv,
}

impl FileKind {
    /// The kind of a file name, `None` for any other extension.
    pub fn of(name: &str) -> Option<FileKind> {
        match name.rsplit_once('.')?.1 {
            "json" => Some(FileKind::Json),
            "txt" => Some(FileKind::Txt),
            "csv" => Some(FileKind::Csv),
            _ => None,
        }
    }
}

/// A `*` pattern over one name: literal text with `*` matching any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pieces: Vec<String>,
    literal: bool,
}

impl Glob {
    /// The pattern for `s`.
    pub fn new(s: &str) -> Glob {
        Glob {
            pieces: s.split('*').map(str::to_string).collect(),
            literal: !s.contains('*'),
        }
    }

    /// True when the pattern has no `*`.
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// The pattern as written.
    pub fn text(&self) -> String {
        self.pieces.join("*")
    }

    /// Whether the whole of `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        let (first, rest) = match self.pieces.split_first() {
            Some(x) => x,
            None => return s.is_empty(),
        };
        if self.literal {
            return s == first;
        }
        let Some(mut s) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return s.is_empty();
        };
        for piece in middle {
            match s.find(piece.as_str()) {
                Some(i) => s = &s[i + piece.len()..],
                None => return false,
            }
        }
        s.len() >= last.len() && s.ends_with(last.as_str())
    }
}

/// A `path` of `paths[]`: directories (each a name or a `*` pattern) and a file name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// The path starts at the server's root (`/`), not at the login directory.
    pub absolute: bool,
    /// The directories, outermost first.
    pub dirs: Vec<Glob>,
    /// The file name without extension.
    pub name: Glob,
    /// The extension.
    pub ext: Glob,
}

impl PathPattern {
    /// Parses `dir/*/name*.csv`. The last component must be a name with an extension.
    pub fn parse(s: &str) -> Result<PathPattern, String> {
        let s = s.trim();
        let absolute = s.starts_with('/');
        let mut parts: Vec<&str> = s
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let file = parts
            .pop()
            .ok_or_else(|| "must name a file, e.g. `data/*.csv`".to_string())?;
        let (name, ext) = file.rsplit_once('.').ok_or_else(|| {
            format!("the file name {file:?} has no extension (json, txt or csv, or `*`)")
        })?;
        if name.is_empty() {
            return Err(format!("the file name {file:?} is empty"));
        }
        if !ext.contains('*') && FileKind::of(file).is_none() {
            return Err(format!(
                "the extension {ext:?} is not read: only json, txt and csv files are"
            ));
        }
        Ok(PathPattern {
            absolute,
            dirs: parts.into_iter().map(Glob::new).collect(),
            name: Glob::new(name),
            ext: Glob::new(ext),
        })
    }

    /// True when no part has a `*`: the path names one file.
    pub fn is_literal(&self) -> bool {
        self.name.is_literal() && self.ext.is_literal() && self.dirs.iter().all(Glob::is_literal)
    }

    /// The literal path (meaningful when [`PathPattern::is_literal`]).
    pub fn literal_path(&self) -> String {
        let mut out = String::new();
        if self.absolute {
            out.push('/');
        }
        for d in &self.dirs {
            out.push_str(&d.text());
            out.push('/');
        }
        out.push_str(&self.name.text());
        out.push('.');
        out.push_str(&self.ext.text());
        out
    }

    /// Whether a file name (no directory) matches the name and extension, and is a json, txt
    /// or csv file. (Upstream matches a name pattern whatever the extension.)
    pub fn matches_file(&self, file_name: &str) -> bool {
        match file_name.rsplit_once('.') {
            Some((n, e)) => {
                FileKind::of(file_name).is_some() && self.name.matches(n) && self.ext.matches(e)
            }
            None => false,
        }
    }
}

/// An expression of a datapoint, the device name or the device type, compiled for every view.
#[derive(Debug, Clone)]
struct Expr {
    src: String,
    /// A non-string `value` in the config: a constant.
    constant: Option<Json>,
    /// `${Column}` pieces (TABLE).
    table: Vec<Piece>,
    /// `[from:to]` slices (SLICED), when the text has brackets.
    slices: Option<ByteSlices>,
    /// `${path}` template (json), when the text parses as one.
    template: Option<Template>,
}

#[derive(Debug, Clone)]
enum Piece {
    Lit(String),
    Col(String),
}

impl Expr {
    fn build(src: &str, view: DataView) -> Result<Expr, String> {
        let mut table = Vec::new();
        let mut rest = src;
        while let Some(open) = rest.find("${") {
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("unterminated `${{` in {src:?}"));
            };
            if open > 0 {
                table.push(Piece::Lit(rest[..open].to_string()));
            }
            table.push(Piece::Col(rest[open + 2..open + close].to_string()));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            table.push(Piece::Lit(rest.to_string()));
        }
        let slices = if src.contains('[') && src.contains(']') {
            match ByteSlices::parse(src) {
                Ok(s) => Some(s),
                Err(e) if view == DataView::Sliced => return Err(e.to_string()),
                Err(_) => None,
            }
        } else {
            None
        };
        Ok(Expr {
            src: src.to_string(),
            constant: None,
            table,
            slices,
            template: Template::parse(src).ok(),
        })
    }

    fn constant(v: &Json) -> Expr {
        Expr {
            src: v.to_string(),
            constant: Some(v.clone()),
            table: Vec::new(),
            slices: None,
            template: None,
        }
    }

    fn sliced(&self, first_field: &str) -> String {
        match &self.slices {
            Some(s) => s.render(first_field.as_bytes(), false),
            None => self.src.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Point {
    key: Expr,
    value: Expr,
    ty: DataType,
}

impl Point {
    fn build(p: &DatapointConfig, view: DataView) -> Result<Point, String> {
        let value = match &p.value {
            Json::String(s) => Expr::build(s, view)?,
            other => Expr::constant(other),
        };
        Ok(Point {
            key: Expr::build(&p.key, view)?,
            value,
            ty: p.data_type.unwrap_or(DataType::String),
        })
    }
}

/// One entry of `paths[]`, compiled.
#[derive(Debug, Clone)]
pub struct PathSpec {
    /// The files.
    pub pattern: PathPattern,
    /// FULL or PARTIAL.
    pub read_mode: ReadMode,
    /// TABLE or SLICED (txt files).
    pub view: DataView,
    /// Newest first by modification time.
    pub sort: bool,
    /// Time between reads.
    pub poll: Duration,
    /// Files of this many bytes or more are skipped.
    pub max_bytes: u64,
    delimiter: String,
    device_name: Expr,
    device_type: Expr,
    attributes: Vec<Point>,
    timeseries: Vec<Point>,
    ts: Option<Expr>,
}

/// A TABLE file's columns resolved for every expression: built once per file from its header.
#[derive(Debug, Clone)]
pub struct Layout {
    columns: usize,
    device_name: Vec<RPiece>,
    device_type: Vec<RPiece>,
    attributes: Vec<RPoint>,
    timeseries: Vec<RPoint>,
    ts: Option<Vec<RPiece>>,
}

/// A datapoint resolved against a header: key pieces, value pieces, constant value, type.
type RPoint = (Vec<RPiece>, Vec<RPiece>, Option<Json>, DataType);

#[derive(Debug, Clone)]
enum RPiece {
    Lit(String),
    Col(usize),
    /// A column the header does not have: the expression cannot be rendered.
    Missing,
}

fn resolve(pieces: &[Piece], header: &[&str], missing: &mut Vec<String>) -> Vec<RPiece> {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Lit(s) => RPiece::Lit(s.clone()),
            Piece::Col(c) => match header.iter().position(|h| h == c) {
                Some(i) => RPiece::Col(i),
                None => {
                    missing.push(c.clone());
                    RPiece::Missing
                }
            },
        })
        .collect()
}

/// Renders resolved pieces over a row's fields; `None` when a column is missing from the row.
fn render(pieces: &[RPiece], fields: &[&str]) -> Option<String> {
    if let [RPiece::Col(i)] = pieces {
        return fields.get(*i).map(|s| s.to_string());
    }
    let mut out = String::new();
    for p in pieces {
        match p {
            RPiece::Lit(s) => out.push_str(s),
            RPiece::Col(i) => out.push_str(fields.get(*i)?),
            RPiece::Missing => return None,
        }
    }
    Some(out)
}

/// A line without its line end (`\n`, `\r\n`) and a leading byte-order mark.
pub fn clean_line(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    line.strip_prefix('\u{feff}').unwrap_or(line)
}

fn typed(key: &str, text: String, ty: DataType) -> Result<Value, ConvertError> {
    if ty == DataType::String {
        return Ok(Value::String(text));
    }
    tbgw::expr::convert_owned(Json::String(text), ty).map_err(|e| ConvertError::Value {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn typed_json(key: &str, v: Json, ty: DataType) -> Result<Value, ConvertError> {
    tbgw::expr::convert_owned(v, ty).map_err(|e| ConvertError::Value {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

impl PathSpec {
    /// Compiles a `paths[]` entry. The error names the key (relative to the entry) and why.
    pub fn build(p: &PathConfig) -> Result<PathSpec, (String, String)> {
        let view = p.txt_file_data_view;
        let pattern = PathPattern::parse(&p.path).map_err(|e| ("path".to_string(), e))?;
        let points = |list: &[DatapointConfig], what: &str| {
            list.iter()
                .enumerate()
                .map(|(i, d)| Point::build(d, view).map_err(|e| (format!("{what}[{i}]"), e)))
                .collect::<Result<Vec<_>, _>>()
        };
        let attributes = points(&p.attributes, "attributes")?;
        let mut timeseries = points(&p.timeseries, "timeseries")?;
        let ts = timeseries
            .iter()
            .position(|t| t.key.src == "ts")
            .map(|i| timeseries.remove(i).value);
        Ok(PathSpec {
            pattern,
            read_mode: p.read_mode,
            view,
            sort: p.with_sorting_files,
            poll: p.poll(),
            max_bytes: p.max_bytes(),
            delimiter: p.delimiter.clone(),
            device_name: Expr::build(&p.device_pattern_name, view)
                .map_err(|e| ("devicePatternName".to_string(), e))?,
            device_type: Expr::build(&p.device_pattern_type, view)
                .map_err(|e| ("devicePatternType".to_string(), e))?,
            attributes,
            timeseries,
            ts,
        })
    }

    /// Whether files of `kind` are read as a table (a header line, then rows).
    pub fn is_table(&self, kind: FileKind) -> bool {
        kind == FileKind::Csv || (kind == FileKind::Txt && self.view == DataView::Table)
    }

    /// The layout of a TABLE file from its header line, and the columns the expressions name
    /// that the header lacks (those datapoints are never sent for this file).
    pub fn layout(&self, header: &str) -> (Layout, Vec<String>) {
        let header: Vec<&str> = clean_line(header).split(self.delimiter.as_str()).collect();
        let mut missing = Vec::new();
        let mut points = |list: &[Point]| {
            list.iter()
                .map(|p| {
                    (
                        resolve(&p.key.table, &header, &mut missing),
                        resolve(&p.value.table, &header, &mut missing),
                        p.value.constant.clone(),
                        p.ty,
                    )
                })
                .collect::<Vec<_>>()
        };
        let attributes = points(&self.attributes);
        let timeseries = points(&self.timeseries);
        let layout = Layout {
            columns: header.len(),
            device_name: resolve(&self.device_name.table, &header, &mut missing),
            device_type: resolve(&self.device_type.table, &header, &mut missing),
            attributes,
            timeseries,
            ts: self
                .ts
                .as_ref()
                .map(|t| resolve(&t.table, &header, &mut missing)),
        };
        missing.sort();
        missing.dedup();
        (layout, missing)
    }

    /// Converts one row of a TABLE file. `None` when the line is empty or nothing could be
    /// converted; problems go to `errors` (a short row, a value not of its type).
    pub fn convert_row(
        &self,
        layout: &Layout,
        line: &str,
        now: i64,
        errors: &mut Vec<ConvertError>,
    ) -> Option<DeviceData> {
        let line = clean_line(line);
        if line.trim().is_empty() {
            return None;
        }
        let fields: Vec<&str> = line.split(self.delimiter.as_str()).collect();
        if fields.len() < layout.columns {
            errors.push(ConvertError::Malformed(format!(
                "a row has {} columns, the header {}",
                fields.len(),
                layout.columns
            )));
        }
        let Some(name) = render(&layout.device_name, &fields) else {
            errors.push(ConvertError::NoDeviceName(format!(
                "devicePatternName {:?} has no value in this row",
                self.device_name.src
            )));
            return None;
        };
        let device_type =
            render(&layout.device_type, &fields).unwrap_or_else(|| self.device_type.src.clone());
        let mut data = DeviceData::new(name, device_type);
        let ts = match &layout.ts {
            Some(t) => match render(t, &fields)
                .and_then(|s| tbgw::expr::parse_timestamp_str(&s, TsOptions::default()))
            {
                Some(ts) => ts,
                None => {
                    errors.push(ConvertError::Value {
                        key: "ts".into(),
                        reason: "not a timestamp; the time of reading is used".into(),
                    });
                    now
                }
            },
            None => now,
        };
        let mut one = |(k, v, c, ty): &RPoint, attribute: bool| {
            let Some(key) = render(k, &fields) else {
                return;
            };
            let value = match c {
                Some(c) => typed_json(&key, c.clone(), *ty),
                None => match render(v, &fields) {
                    Some(text) => typed(&key, text, *ty),
                    None => return,
                },
            };
            match value {
                Ok(value) if attribute => data.push_attribute(key, value),
                Ok(value) => data.push_telemetry(ts, key, value),
                Err(e) => errors.push(e),
            }
        };
        for p in &layout.attributes {
            one(p, true);
        }
        for p in &layout.timeseries {
            one(p, false);
        }
        (!data.is_empty()).then_some(data)
    }

    /// Converts one line of a SLICED txt file.
    pub fn convert_sliced(
        &self,
        line: &str,
        now: i64,
        errors: &mut Vec<ConvertError>,
    ) -> Option<DeviceData> {
        let line = clean_line(line);
        if line.trim().is_empty() {
            return None;
        }
        let first = line.split(self.delimiter.as_str()).next().unwrap_or("");
        let mut data = DeviceData::new(
            self.device_name.sliced(first),
            self.device_type.sliced(first),
        );
        if data.device_name.is_empty() {
            errors.push(ConvertError::NoDeviceName(format!(
                "devicePatternName {:?} selects nothing in this line",
                self.device_name.src
            )));
            return None;
        }
        let ts = match &self.ts {
            Some(t) => tbgw::expr::parse_timestamp_str(&t.sliced(first), TsOptions::default())
                .unwrap_or(now),
            None => now,
        };
        let mut one = |p: &Point, attribute: bool| {
            let key = p.key.sliced(first);
            let value = match &p.value.constant {
                Some(c) => typed_json(&key, c.clone(), p.ty),
                None => typed(&key, p.value.sliced(first), p.ty),
            };
            match value {
                Ok(value) if attribute => data.push_attribute(key, value),
                Ok(value) => data.push_telemetry(ts, key, value),
                Err(e) => errors.push(e),
            }
        };
        for p in &self.attributes {
            one(p, true);
        }
        for p in &self.timeseries {
            one(p, false);
        }
        (!data.is_empty()).then_some(data)
    }

    /// Converts a json file's content: an object or an array of objects.
    pub fn convert_json(
        &self,
        content: &[u8],
        now: i64,
        errors: &mut Vec<ConvertError>,
    ) -> Result<Vec<DeviceData>, ConvertError> {
        let json: Json = serde_json::from_slice(content)
            .map_err(|e| ConvertError::Malformed(format!("not JSON: {e}")))?;
        let records = match json {
            Json::Array(items) => items,
            other => vec![other],
        };
        let mut out = Vec::new();
        for r in &records {
            if let Some(d) = self.convert_json_record(r, now, errors) {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn convert_json_record(
        &self,
        r: &Json,
        now: i64,
        errors: &mut Vec<ConvertError>,
    ) -> Option<DeviceData> {
        let text = |e: &Expr| match &e.template {
            Some(t) => t.render_or_keep(r),
            None => e.src.clone(),
        };
        let name = text(&self.device_name);
        if name.is_empty() {
            errors.push(ConvertError::NoDeviceName("empty device name".into()));
            return None;
        }
        let mut data = DeviceData::new(name, text(&self.device_type));
        let ts = r
            .get("ts")
            .or_else(|| r.get("timestamp"))
            .and_then(|v| tbgw::expr::parse_timestamp(v, TsOptions::default()))
            .unwrap_or(now);
        let mut one = |p: &Point, attribute: bool| {
            let key = text(&p.key);
            let raw = match (&p.value.constant, &p.value.template) {
                (Some(c), _) => c.clone(),
                (None, Some(t)) => match t.resolve(r) {
                    Some(v) => v.into_owned(),
                    None => {
                        errors.push(ConvertError::Value {
                            key,
                            reason: format!("{} matches nothing", p.value.src),
                        });
                        return;
                    }
                },
                (None, None) => Json::String(p.value.src.clone()),
            };
            match typed_json(&key, raw, p.ty) {
                Ok(value) if attribute => data.push_attribute(key, value),
                Ok(value) => data.push_telemetry(ts, key, value),
                Err(e) => errors.push(e),
            }
        };
        for p in &self.attributes {
            one(p, true);
        }
        for p in &self.timeseries {
            one(p, false);
        }
        (!data.is_empty()).then_some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Json) -> PathSpec {
        let p: PathConfig = serde_json::from_value(v).unwrap();
        PathSpec::build(&p).unwrap()
    }

    #[test]
    fn globs() {
        assert!(Glob::new("*_hello*").matches("a_hello"));
        assert!(Glob::new("*_hello*").matches("_hello_x"));
        assert!(!Glob::new("*_hello*").matches("hello"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("a*b*c").matches("abc"));
        assert!(!Glob::new("a*b*c").matches("acb"));
        assert!(Glob::new("data").matches("data"));
        assert!(!Glob::new("ab*ba").matches("aba"));
    }

    #[test]
    fn path_patterns() {
        let p = PathPattern::parse("fol/*_hello*.txt").unwrap();
        assert!(p.matches_file("x_hello.txt"));
        assert!(
            !p.matches_file("x_hello.csv"),
            "upstream matches any extension here"
        );
        assert!(!p.matches_file("x_hello.log"));
        let any = PathPattern::parse("*/*.*").unwrap();
        assert!(any.matches_file("a.json") && any.matches_file("b.csv"));
        assert!(!any.matches_file("b.xml"));
        assert!(PathPattern::parse("dir/").is_err());
        assert!(PathPattern::parse("dir/noext").is_err());
        assert!(PathPattern::parse("dir/a.xml").is_err());
        let lit = PathPattern::parse("/abs/dir/hello.json").unwrap();
        assert!(lit.is_literal());
        assert_eq!(lit.literal_path(), "/abs/dir/hello.json");
    }

    #[test]
    fn table_rows_are_typed() {
        let s = spec(json!({
            "path": "d/*.csv", "devicePatternName": "${name}", "devicePatternType": "meter",
            "attributes": [{"key": "model", "value": "${model}"}],
            "timeseries": [
                {"key": "temp", "value": "${temp}", "type": "double"},
                {"key": "count", "value": "${count}", "type": "int"},
                {"key": "on", "value": "${on}", "type": "bool"},
                {"key": "raw", "value": "t=${temp}"},
                {"key": "ts", "value": "${time}"}
            ]
        }));
        let (layout, missing) = s.layout("name,model,temp,count,on,time\r\n");
        assert!(missing.is_empty());
        let mut errors = Vec::new();
        let d = s
            .convert_row(&layout, "m1,X2,21.5,7,true,1700000000\r\n", 5, &mut errors)
            .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(d.device_name, "m1");
        assert_eq!(d.device_type, "meter");
        assert_eq!(
            d.attributes,
            vec![("model".into(), Value::String("X2".into()))]
        );
        assert_eq!(d.telemetry.len(), 1);
        assert_eq!(d.telemetry[0].ts, 1_700_000_000_000);
        assert_eq!(
            d.telemetry[0].values,
            vec![
                ("temp".into(), Value::Float(21.5)),
                ("count".into(), Value::Int(7)),
                ("on".into(), Value::Bool(true)),
                ("raw".into(), Value::String("t=21.5".into())),
            ]
        );
    }

    #[test]
    fn short_and_bad_rows_are_errors_not_panics() {
        let s = spec(json!({
            "path": "d/*.csv", "devicePatternName": "dev",
            "timeseries": [
                {"key": "a", "value": "${a}", "type": "int"},
                {"key": "b", "value": "${b}", "type": "int"}
            ]
        }));
        let (layout, _) = s.layout("a,b");
        let mut errors = Vec::new();
        let d = s.convert_row(&layout, "1", 0, &mut errors).unwrap();
        assert_eq!(d.telemetry[0].values, vec![("a".into(), Value::Int(1))]);
        assert!(matches!(errors[0], ConvertError::Malformed(_)));
        errors.clear();
        let d = s.convert_row(&layout, "x,2", 0, &mut errors).unwrap();
        assert_eq!(d.telemetry[0].values, vec![("b".into(), Value::Int(2))]);
        assert!(matches!(errors[0], ConvertError::Value { .. }));
        errors.clear();
        assert!(s.convert_row(&layout, "\r\n", 0, &mut errors).is_none());
        assert!(errors.is_empty());
    }

    #[test]
    fn header_without_a_named_column_is_reported() {
        let s = spec(json!({
            "path": "d/*.csv", "devicePatternName": "dev",
            "timeseries": [{"key": "a", "value": "${nope}"}]
        }));
        let (_, missing) = s.layout("a,b");
        assert_eq!(missing, vec!["nope".to_string()]);
    }

    #[test]
    fn sliced_lines_slice_the_first_field() {
        // Upstream's own sample: key "[0:1]" and value "[1:]" of the line's first field.
        let s = spec(json!({
            "path": "fol/*_hello*.txt", "devicePatternName": "asd", "delimiter": ",",
            "txtFileDataView": "SLICED",
            "attributes": [{"key": "temp", "value": "[1:]"}, {"key": "tmp", "value": "[0:1]"}],
            "timeseries": [
                {"type": "int", "key": "[0:1]", "value": "[0:1]"},
                {"type": "int", "key": "temp", "value": "[1:]"}
            ]
        }));
        let mut errors = Vec::new();
        let d = s.convert_sliced("123,xyz\n", 9, &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(d.device_name, "asd");
        assert_eq!(
            d.attributes,
            vec![
                ("temp".into(), Value::String("23".into())),
                ("tmp".into(), Value::String("1".into()))
            ]
        );
        assert_eq!(
            d.telemetry[0].values,
            vec![("1".into(), Value::Int(1)), ("temp".into(), Value::Int(23))]
        );
        // A slice past the end selects nothing: a typed value fails, nothing panics.
        let d = s.convert_sliced("9", 9, &mut errors);
        assert!(d.is_some());
        assert!(!errors.is_empty());
    }

    #[test]
    fn json_objects_and_arrays() {
        let s = spec(json!({
            "path": "d/*.json", "devicePatternName": "${serial}", "devicePatternType": "${kind}",
            "attributes": [{"key": "fw", "value": "${info.fw}"}],
            "timeseries": [
                {"key": "temp", "value": "${temp}", "type": "double"},
                {"key": "t_${unit}", "value": "${temp}"}
            ]
        }));
        let mut errors = Vec::new();
        let out = s
            .convert_json(
                br#"[{"serial":"S1","kind":"k","info":{"fw":"1.2"},"temp":"21.5","unit":"C","ts":1700000000000},
                     {"serial":"S2","kind":"k","temp":3}]"#,
                1,
                &mut errors,
            )
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].device_name, "S1");
        assert_eq!(out[0].telemetry[0].ts, 1_700_000_000_000);
        assert_eq!(
            out[0].telemetry[0].values,
            vec![
                ("temp".into(), Value::Float(21.5)),
                ("t_C".into(), Value::String("21.5".into()))
            ]
        );
        assert_eq!(out[1].telemetry[0].ts, 1);
        assert_eq!(errors.len(), 1, "S2 has no info.fw: {errors:?}");
        assert!(s.convert_json(b"{nope", 1, &mut errors).is_err());
    }
}
