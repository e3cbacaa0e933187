//! A servable file's graph cut down to the outputs a run needs.
//!
//! ONNX Runtime executes every node of a session's graph on every run, whichever outputs the run
//! asks for, so a batch that asks only for `logits` costs as much as one that asks for
//! everything. An unrolled ConvRNN computes every layer at every step for its `[N,T,C,H,W]`
//! activation output, but the logits at step t only reach back to layer l at step
//! t - (depth - l), so a large part of the graph feeds nothing but activation outputs
//! (docs/performance.md, "Pruned graphs", has the node counts). Classification runs on
//! a session built from the graph pruned here to `logits`; its results are the same bits. (The
//! steps before a layer is image-driven are computed at batch 1 in the file and folded into
//! constants by ONNX Runtime when it builds a session: models/convrnn/model.py `forward`.)
//!
//! Works on the protobuf wire format: only the fields that decide what a node consumes and
//! produces are decoded, and every other byte (metadata, opsets, attributes, weights) is copied
//! unchanged, so nothing the server does not understand is lost or rewritten.

use std::collections::{HashMap, HashSet};

use super::onnx_wire::{
    field, model_graph, read_node, read_tensor, value_info_name, with_graph, Fields, Node,
    WireError,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PruneError {
    #[error("not a valid ONNX protobuf: {0}")]
    Malformed(&'static str),
    /// A graph this simple walk cannot prune safely; the caller keeps the whole graph.
    #[error("cannot prune this graph: {0}")]
    Unsupported(&'static str),
    #[error("the graph has no output named {0:?}")]
    UnknownOutput(String),
}

impl From<WireError> for PruneError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e.0)
    }
}

/// The serialized model with only the nodes that `keep` depends on.
#[derive(Debug)]
pub struct Pruned {
    pub bytes: Vec<u8>,
    pub nodes_before: usize,
    pub nodes_after: usize,
}

/// Returns `model` with its graph reduced to the outputs named in `keep` and the nodes, inputs
/// and initializers they need. Errors leave the caller to use the whole graph.
pub fn prune_to_outputs(model: &[u8], keep: &[&str]) -> Result<Pruned, PruneError> {
    let (pruned_graph, nodes_before, nodes_after) = prune_graph(model_graph(model)?, keep)?;
    Ok(Pruned {
        bytes: with_graph(model, &pruned_graph)?,
        nodes_before,
        nodes_after,
    })
}

fn prune_graph(graph: &[u8], keep: &[&str]) -> Result<(Vec<u8>, usize, usize), PruneError> {
    let mut nodes = Vec::new();
    let mut outputs = Vec::new();
    let mut initializers = HashSet::new();
    for f in Fields::new(graph) {
        let f = f?;
        match f.number {
            field::GRAPH_NODE => nodes.push(parse_node(f.payload()?)?),
            field::GRAPH_OUTPUT => outputs.push(value_info_name(f.payload()?)?),
            field::GRAPH_INITIALIZER => {
                initializers.insert(initializer_name(f.payload()?)?);
            }
            _ => {}
        }
    }
    for name in keep {
        if !outputs.contains(name) {
            return Err(PruneError::UnknownOutput(name.to_string()));
        }
    }

    // Graph nodes are topologically sorted by the standard, but walking producers from the kept
    // outputs does not depend on that.
    let mut producer = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for out in node.outputs.iter().filter(|o| !o.is_empty()) {
            producer.insert(*out, i);
        }
    }
    let mut needed: HashSet<&str> = keep.iter().copied().collect();
    let mut pending: Vec<&str> = keep.to_vec();
    let mut kept = vec![false; nodes.len()];
    while let Some(name) = pending.pop() {
        let Some(&i) = producer.get(name) else {
            continue; // a graph input or an initializer
        };
        if std::mem::replace(&mut kept[i], true) {
            continue;
        }
        for input in nodes[i].inputs.iter().filter(|n| !n.is_empty()) {
            if needed.insert(input) {
                pending.push(input);
            }
        }
    }

    let mut out = Vec::with_capacity(graph.len());
    let mut node_index = 0;
    for f in Fields::new(graph) {
        let f = f?;
        let copy = match f.number {
            field::GRAPH_NODE => {
                node_index += 1;
                kept[node_index - 1]
            }
            field::GRAPH_OUTPUT => keep.contains(&value_info_name(f.payload()?)?),
            field::GRAPH_INITIALIZER => needed.contains(initializer_name(f.payload()?)?),
            // Before IR 4 every initializer is also listed as an input; an input without its
            // initializer would become one the caller has to feed.
            field::GRAPH_INPUT => {
                let name = value_info_name(f.payload()?)?;
                !initializers.contains(name) || needed.contains(name)
            }
            field::GRAPH_VALUE_INFO => needed.contains(value_info_name(f.payload()?)?),
            _ => true,
        };
        if copy {
            out.extend_from_slice(f.raw);
        }
    }
    let nodes_after = kept.iter().filter(|k| **k).count();
    Ok((out, nodes.len(), nodes_after))
}

/// The node, refused if it holds a subgraph (the walk follows inputs only).
fn parse_node(bytes: &[u8]) -> Result<Node<'_>, PruneError> {
    let node = read_node(bytes)?;
    if node.has_subgraph {
        return Err(PruneError::Unsupported("a node has a subgraph"));
    }
    Ok(node)
}

/// The pruned bytes are loaded from memory, where paths relative to the file mean nothing.
fn initializer_name(bytes: &[u8]) -> Result<&str, PruneError> {
    let t = read_tensor(bytes)?;
    if t.external {
        return Err(PruneError::Unsupported("weights stored outside the file"));
    }
    Ok(t.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx_wire::{write_len_field, write_varint};

    fn string_field(out: &mut Vec<u8>, number: u32, s: &str) {
        write_len_field(out, number, s.as_bytes());
    }

    fn node(inputs: &[&str], outputs: &[&str], attribute: Option<Vec<u8>>) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            string_field(&mut n, field::NODE_INPUT, i);
        }
        for o in outputs {
            string_field(&mut n, field::NODE_OUTPUT, o);
        }
        string_field(&mut n, 4, "Relu"); // op_type, copied untouched
        if let Some(a) = attribute {
            write_len_field(&mut n, field::NODE_ATTRIBUTE, &a);
        }
        n
    }

    fn value_info(name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        string_field(&mut v, field::VALUE_INFO_NAME, name);
        v
    }

    fn tensor(name: &str) -> Vec<u8> {
        let mut t = Vec::new();
        write_varint(&mut t, 1 << 3); // dims: [4]
        write_varint(&mut t, 4);
        string_field(&mut t, field::TENSOR_NAME, name);
        t
    }

    /// x -> A -> a -> B(a, w) -> b (output);  x -> C(v) -> c (output);  unused initializer v is
    /// also listed as an input, as before IR 4.
    fn graph(extra_node: Option<Vec<u8>>) -> Vec<u8> {
        let mut g = Vec::new();
        write_len_field(&mut g, field::GRAPH_NODE, &node(&["x"], &["a"], None));
        write_len_field(&mut g, field::GRAPH_NODE, &node(&["a", "w"], &["b"], None));
        write_len_field(&mut g, field::GRAPH_NODE, &node(&["x", "v"], &["c"], None));
        if let Some(n) = extra_node {
            write_len_field(&mut g, field::GRAPH_NODE, &n);
        }
        string_field(&mut g, 2, "graph-name");
        write_len_field(&mut g, field::GRAPH_INITIALIZER, &tensor("w"));
        write_len_field(&mut g, field::GRAPH_INITIALIZER, &tensor("v"));
        for input in ["x", "w", "v"] {
            write_len_field(&mut g, field::GRAPH_INPUT, &value_info(input));
        }
        write_len_field(&mut g, field::GRAPH_OUTPUT, &value_info("b"));
        write_len_field(&mut g, field::GRAPH_OUTPUT, &value_info("c"));
        write_len_field(&mut g, field::GRAPH_VALUE_INFO, &value_info("a"));
        g
    }

    fn model(graph: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        write_varint(&mut m, 1 << 3); // ir_version 8
        write_varint(&mut m, 8);
        write_len_field(&mut m, field::MODEL_GRAPH, graph);
        string_field(&mut m, 14, "metadata stays"); // metadata_props, opaque here
        m
    }

    fn names(graph: &[u8], number: u32) -> Vec<String> {
        Fields::new(graph)
            .map(Result::unwrap)
            .filter(|f| f.number == number)
            .map(|f| match number {
                field::GRAPH_NODE => parse_node(f.payload().unwrap()).unwrap().outputs.join(","),
                field::GRAPH_INITIALIZER => {
                    initializer_name(f.payload().unwrap()).unwrap().to_string()
                }
                _ => value_info_name(f.payload().unwrap()).unwrap().to_string(),
            })
            .collect()
    }

    fn graph_of(model: &[u8]) -> Vec<u8> {
        Fields::new(model)
            .map(Result::unwrap)
            .find(|f| f.number == field::MODEL_GRAPH)
            .unwrap()
            .payload()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn keeps_what_the_outputs_need_and_copies_the_rest() {
        let p = prune_to_outputs(&model(&graph(None)), &["b"]).unwrap();
        assert_eq!((p.nodes_before, p.nodes_after), (3, 2));
        let g = graph_of(&p.bytes);
        assert_eq!(names(&g, field::GRAPH_NODE), ["a", "b"]);
        assert_eq!(names(&g, field::GRAPH_OUTPUT), ["b"]);
        assert_eq!(names(&g, field::GRAPH_INITIALIZER), ["w"]);
        assert_eq!(names(&g, field::GRAPH_INPUT), ["x", "w"]);
        assert_eq!(names(&g, field::GRAPH_VALUE_INFO), ["a"]);
        // Fields pruning does not read survive byte for byte.
        let text = String::from_utf8_lossy(&p.bytes);
        assert!(text.contains("graph-name") && text.contains("metadata stays"));
        assert!(text.contains("Relu"));
    }

    #[test]
    fn keeping_every_output_changes_nothing() {
        let m = model(&graph(None));
        let p = prune_to_outputs(&m, &["b", "c"]).unwrap();
        assert_eq!(p.nodes_after, 3);
        assert_eq!(p.bytes, m);
    }

    #[test]
    fn refuses_unknown_outputs_subgraphs_and_external_weights() {
        let m = model(&graph(None));
        assert_eq!(
            prune_to_outputs(&m, &["logits"]).unwrap_err(),
            PruneError::UnknownOutput("logits".into())
        );
        let mut attribute = Vec::new();
        write_len_field(&mut attribute, field::ATTRIBUTE_GRAPH, &[]);
        let with_if = model(&graph(Some(node(&["x"], &["d"], Some(attribute)))));
        assert!(matches!(
            prune_to_outputs(&with_if, &["b"]),
            Err(PruneError::Unsupported(_))
        ));
        let mut g = graph(None);
        let mut external = tensor("e");
        write_varint(&mut external, u64::from(field::TENSOR_DATA_LOCATION) << 3);
        write_varint(&mut external, 1);
        write_len_field(&mut g, field::GRAPH_INITIALIZER, &external);
        assert!(matches!(
            prune_to_outputs(&model(&g), &["b"]),
            Err(PruneError::Unsupported(_))
        ));
    }

    #[test]
    fn cut_or_corrupt_bytes_are_errors_not_panics() {
        let m = model(&graph(None));
        for end in 0..m.len() {
            let _ = prune_to_outputs(&m[..end], &["b"]);
        }
        for i in 0..m.len() {
            let mut bad = m.clone();
            bad[i] ^= 0xff;
            let _ = prune_to_outputs(&bad, &["b"]);
        }
        assert!(prune_to_outputs(&[], &["b"]).is_err());
        assert!(prune_to_outputs(&[0xff; 12], &["b"]).is_err());
    }

    #[test]
    fn the_committed_model_loses_the_steps_logits_never_see() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/rgc_fmnist.onnx");
        let bytes = std::fs::read(path).unwrap();
        let p = prune_to_outputs(&bytes, &[crate::model::LOGITS_NAME]).unwrap();
        // 4 layers x 8 steps: layer l feeds the logits up to step 4 + l only (each edge costs a
        // step), so the later steps of the lower layers and the layer outputs' concats go.
        assert_eq!((p.nodes_before, p.nodes_after), (980, 655));
        assert!(p.bytes.len() < bytes.len());
        assert_eq!(names(&graph_of(&p.bytes), field::GRAPH_OUTPUT), ["logits"]);
    }
}
