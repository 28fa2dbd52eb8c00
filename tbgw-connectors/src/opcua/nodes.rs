//! Node expressions as upstream writes them: browse paths with `\.` between segments
//! (`Root\.Objects\.Device1\.Temperature`, relative `Sub\.Inner`, namespace-prefixed
//! `2:Temperature`) and node ids (`ns=2;i=13`, `ns=2;s=name`, `ns=2;g=<guid>`, `ns=2;b=<base64>`),
//! bare or inside `${...}`.

use std::str::FromStr;

use opcua::types::NodeId;

/// One browse-path segment: a browse name, optionally with its namespace index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    /// `Some(ns)` when written as `ns:Name`.
    pub ns: Option<u16>,
    /// The browse name's text.
    pub name: String,
}

/// Where a node is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeRef {
    /// A node id.
    Id(NodeId),
    /// A browse path from the Root folder (the `Root` segment itself is not stored).
    Absolute(Vec<Segment>),
    /// A browse path below the device node.
    Relative(Vec<Segment>),
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |segs: &[Segment]| {
            segs.iter()
                .map(|s| match s.ns {
                    Some(ns) => format!("{ns}:{}", s.name),
                    None => s.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(".")
        };
        match self {
            NodeRef::Id(id) => write!(f, "{id}"),
            NodeRef::Absolute(s) => write!(f, "Root.{}", join(s)),
            NodeRef::Relative(s) => write!(f, "{}", join(s)),
        }
    }
}

/// Splits a browse path on `\.` (upstream's segment separator) and, for convenience, on a plain
/// `.` when the text has no `\.` at all.
pub fn split_path(text: &str) -> Vec<String> {
    if text.contains("\\.") {
        text.split("\\.").map(str::to_string).collect()
    } else {
        text.split('.').map(str::to_string).collect()
    }
}

/// Parses `ns:Name` into a segment.
pub fn segment(text: &str) -> Segment {
    if let Some((ns, name)) = text.split_once(':') {
        if let Ok(ns) = ns.parse::<u16>() {
            return Segment {
                ns: Some(ns),
                name: name.to_string(),
            };
        }
    }
    Segment {
        ns: None,
        name: text.to_string(),
    }
}

/// Strips one `${...}` around `text`, if present.
pub fn strip_placeholder(text: &str) -> &str {
    let t = text.trim();
    t.strip_prefix("${")
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(t)
}

/// Parses a node id in the `ns=<n>;<i|s|g|b>=<value>` form.
pub fn parse_node_id(text: &str) -> Option<NodeId> {
    let t = text.trim();
    if !(t.starts_with("ns=")
        || t.starts_with("i=")
        || t.starts_with("s=")
        || t.starts_with("g=")
        || t.starts_with("b="))
    {
        return None;
    }
    NodeId::from_str(t).ok()
}

/// Parses a node expression (with or without `${}`): a node id, an absolute path (first segment
/// `Root`) or a relative path.
pub fn parse_node_ref(text: &str) -> Result<NodeRef, String> {
    let inner = strip_placeholder(text);
    if inner.is_empty() {
        return Err("empty node expression".into());
    }
    if let Some(id) = parse_node_id(inner) {
        return Ok(NodeRef::Id(id));
    }
    if inner.starts_with("ns=") || inner.starts_with("i=") {
        return Err(format!("{inner:?} is not a valid node id"));
    }
    let segs: Vec<Segment> = split_path(inner).iter().map(|s| segment(s)).collect();
    if segs.iter().any(|s| s.name.is_empty()) {
        return Err(format!("{inner:?} has an empty path segment"));
    }
    if segs.first().is_some_and(|s| s.name == "Root") {
        let rest = segs[1..].to_vec();
        Ok(NodeRef::Absolute(rest))
    } else {
        Ok(NodeRef::Relative(segs))
    }
}

/// A template part: literal text or a node placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    /// Copied as is.
    Text(String),
    /// Replaced by the node's value.
    Node(NodeRef),
}

/// Parses a template such as `Device ${DeviceName}` into parts.
pub fn parse_template(text: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            parts.push(TemplatePart::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in {text:?}"))?;
        parts.push(TemplatePart::Node(parse_node_ref(&after[..end])?));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_string()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_ids_are_told_apart() {
        assert_eq!(
            parse_node_ref("${ns=2;i=13}").unwrap(),
            NodeRef::Id(NodeId::new(2, 13u32))
        );
        assert_eq!(
            parse_node_ref("ns=2;s=Device1.Special").unwrap(),
            NodeRef::Id(NodeId::new(2, "Device1.Special"))
        );
        assert!(matches!(
            parse_node_ref("ns=2;g=0d4a6b3e-8c2f-4a59-9f00-5b2f0c1e7a11").unwrap(),
            NodeRef::Id(_)
        ));
        assert!(matches!(
            parse_node_ref("ns=2;b=yv4=").unwrap(),
            NodeRef::Id(_)
        ));
        assert_eq!(
            parse_node_ref(r"${Root\.Objects\.2:Device1\.Temperature}").unwrap(),
            NodeRef::Absolute(vec![
                segment("Objects"),
                Segment {
                    ns: Some(2),
                    name: "Device1".into()
                },
                segment("Temperature")
            ])
        );
        assert_eq!(
            parse_node_ref(r"${Sub\.Inner}").unwrap(),
            NodeRef::Relative(vec![segment("Sub"), segment("Inner")])
        );
        assert!(parse_node_ref("${ns=x;i=1}").is_err());
        assert!(parse_node_ref("${}").is_err());
    }

    #[test]
    fn templates_mix_text_and_nodes() {
        let t = parse_template("Device ${DeviceName} (${ns=2;i=5})").unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(t[0], TemplatePart::Text("Device ".into()));
        assert!(parse_template("Device ${Oops").is_err());
    }
}
