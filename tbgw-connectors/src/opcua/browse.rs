//! Browsing and path resolution, batched: one Browse request per tree level for all the paths
//! being resolved (bounded by the server's `MaxNodesPerBrowse`), with a per-scan cache of each
//! node's children, so a thousand tags under one device cost one Browse call, not a thousand.

use std::collections::HashMap;
use std::sync::Arc;

use opcua::client::Session;
use opcua::types::{
    BrowseDescription, BrowseDirection, BrowseResultMask, NodeId, ReferenceTypeId, StatusCode,
};

use super::nodes::Segment;

/// A child reference found by browsing.
#[derive(Debug, Clone)]
pub struct Child {
    /// Namespace index of the browse name.
    pub ns: u16,
    /// Browse name text.
    pub name: String,
    /// The child node.
    pub node: NodeId,
}

/// Browses with a children cache.
pub struct Browser<'a> {
    session: &'a Session,
    chunk: usize,
    cache: HashMap<NodeId, Arc<Vec<Child>>>,
}

impl<'a> Browser<'a> {
    /// A browser sending at most `chunk` nodes per Browse request.
    pub fn new(session: &'a Session, chunk: usize) -> Self {
        Browser {
            session,
            chunk: chunk.max(1),
            cache: HashMap::new(),
        }
    }

    /// Makes sure the children of every node in `nodes` are cached.
    pub async fn fetch(&mut self, nodes: &[NodeId]) -> Result<(), StatusCode> {
        let mut todo: Vec<NodeId> = nodes
            .iter()
            .filter(|n| !self.cache.contains_key(*n))
            .cloned()
            .collect();
        todo.sort_by_key(|n| n.to_string());
        todo.dedup();
        for chunk in todo.chunks(self.chunk) {
            let req: Vec<BrowseDescription> = chunk
                .iter()
                .map(|n| BrowseDescription {
                    node_id: n.clone(),
                    browse_direction: BrowseDirection::Forward,
                    reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                    include_subtypes: true,
                    node_class_mask: 0,
                    result_mask: BrowseResultMask::All as u32,
                })
                .collect();
            let results = self
                .session
                .browse(&req, 0, None)
                .await
                .map_err(|e| e.status())?;
            for (node, mut result) in chunk.iter().zip(results) {
                let mut children = Vec::new();
                loop {
                    for r in result.references.take().unwrap_or_default() {
                        children.push(Child {
                            ns: r.browse_name.namespace_index,
                            name: r.browse_name.name.value().clone().unwrap_or_default(),
                            node: r.node_id.node_id,
                        });
                    }
                    if result.continuation_point.is_null_or_empty() {
                        break;
                    }
                    let next = self
                        .session
                        .browse_next(false, &[result.continuation_point.clone()])
                        .await
                        .map_err(|e| e.status())?;
                    match next.into_iter().next() {
                        Some(r) => result = r,
                        None => break,
                    }
                }
                self.cache.insert(node.clone(), Arc::new(children));
            }
        }
        Ok(())
    }

    /// The cached children of `node` (empty when not fetched or failed).
    pub fn children(&self, node: &NodeId) -> Arc<Vec<Child>> {
        self.cache.get(node).cloned().unwrap_or_default()
    }

    /// Resolves many browse paths at once, level by level. `None` where a segment is missing.
    pub async fn resolve(
        &mut self,
        paths: &[(NodeId, Vec<Segment>)],
    ) -> Result<Vec<Option<NodeId>>, StatusCode> {
        let mut current: Vec<Option<NodeId>> = paths.iter().map(|(n, _)| Some(n.clone())).collect();
        let depth = paths.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        for level in 0..depth {
            let parents: Vec<NodeId> = paths
                .iter()
                .zip(&current)
                .filter(|((_, segs), cur)| segs.len() > level && cur.is_some())
                .filter_map(|(_, cur)| cur.clone())
                .collect();
            self.fetch(&parents).await?;
            for ((_, segs), cur) in paths.iter().zip(current.iter_mut()) {
                let Some(seg) = segs.get(level) else { continue };
                let Some(parent) = cur.take() else { continue };
                *cur = self
                    .children(&parent)
                    .iter()
                    .find(|c| c.name == seg.name && seg.ns.is_none_or(|ns| ns == c.ns))
                    .map(|c| c.node.clone());
            }
        }
        Ok(current)
    }
}
