//! A servable file's graph specialised to the default presentation: one image held for
//! `image_on_steps`, then blank.
//!
//! The export reads frame `t` of its `[N, T, C, H, W]` input at step `t` (one `Gather` per
//! step), so ONNX Runtime cannot know that frames 0..k are the same image and computes every
//! layer that sees them once per step. Under the default schedule they are the same, and so are
//! all blank frames after them: this rewrite points every step's `Gather` at the first frame of
//! its run (0 while the image is on, `image_on_steps` after). The steps of a stateless layer then
//! read the same tensor through the same weights, and the rewrite keeps only the first of each
//! set of nodes that compute the same thing (operator, attributes, inputs), down through every
//! feedforward layer and a recurrent cell's convolutions of its input: most of a paper-sized
//! model's early layers (docs/performance.md, "Each run of equal frames once"). The input and
//! outputs keep their names and shapes, and on a default-schedule movie the results are the same
//! bits; any other movie runs on the file's own graph.
//!
//! Like [`super::prune`], this works on the protobuf wire format and copies every byte it does
//! not rewrite.

use std::collections::{HashMap, HashSet};

use super::onnx_wire::{
    field, model_graph, read_attribute, read_node, read_tensor, value_info_name, with_graph,
    write_len_field, write_varint, Fields, Node, WireError, INT64,
};
use super::INPUT_NAME as FRAMES_NAME;

/// The index tensors the rewritten `Gather`s read: the image's frame and the first blank one.
const IMAGE_INDEX: &str = "convrnn.held.image_frame";
const BLANK_INDEX: &str = "convrnn.held.blank_frame";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeldError {
    #[error("not a valid ONNX protobuf: {0}")]
    Malformed(&'static str),
    /// A graph this rewrite does not understand; the caller serves every schedule from the
    /// file's own graph.
    #[error("cannot specialise this graph to the default schedule: {0}")]
    Unsupported(&'static str),
    /// Every step already reads the first frame of its run: nothing would merge.
    #[error("the graph already reads each run of equal frames once")]
    Unchanged,
}

impl From<WireError> for HeldError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e.0)
    }
}

/// The serialized model whose steps read the first frame of their run of equal frames.
#[derive(Debug)]
pub struct Held {
    pub bytes: Vec<u8>,
    /// `Gather`s now reading another frame than their own step's.
    pub steps_redirected: usize,
    /// Nodes dropped because an earlier one computes the same thing.
    pub nodes_merged: usize,
}

/// Returns `model` with every step's frame read from frame 0 (steps before `image_on_steps`)
/// or frame `image_on_steps` (the blank steps after), for movies of `steps` frames.
pub fn hold_image(model: &[u8], steps: usize, image_on_steps: usize) -> Result<Held, HeldError> {
    if image_on_steps == 0 || image_on_steps > steps {
        return Err(HeldError::Unsupported("image_on_steps outside 1..=steps"));
    }
    let (held_graph, steps_redirected, nodes_merged) =
        hold_graph(model_graph(model)?, steps, image_on_steps)?;
    Ok(Held {
        bytes: with_graph(model, &held_graph)?,
        steps_redirected,
        nodes_merged,
    })
}

/// What makes two nodes compute the same thing.
#[derive(PartialEq, Eq, Hash)]
struct NodeKey<'a> {
    op_type: &'a str,
    domain: &'a str,
    inputs: Vec<&'a str>,
    attributes: Vec<&'a [u8]>,
}

/// Operators whose outputs differ between two calls on the same inputs.
const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
];

fn hold_graph(
    graph: &[u8],
    steps: usize,
    image_on_steps: usize,
) -> Result<(Vec<u8>, usize, usize), HeldError> {
    let mut nodes = Vec::new();
    let mut constants: HashMap<&str, i64> = HashMap::new();
    let mut graph_outputs = HashSet::new();
    let mut has_frames = false;
    for f in Fields::new(graph) {
        let f = f?;
        match f.number {
            field::GRAPH_NODE => {
                let node = parse_node(f.payload()?)?;
                if node.op_type == "Constant" {
                    if let (Some(v), [out]) = (constant_scalar(&node)?, node.outputs.as_slice()) {
                        constants.insert(out, v);
                    }
                }
                nodes.push(node);
            }
            field::GRAPH_INITIALIZER => {
                let (name, value) = parse_tensor(f.payload()?)?;
                if let Some(v) = value {
                    constants.insert(name, v);
                }
            }
            field::GRAPH_INPUT => has_frames |= value_info_name(f.payload()?)? == FRAMES_NAME,
            field::GRAPH_OUTPUT => {
                graph_outputs.insert(value_info_name(f.payload()?)?);
            }
            _ => {}
        }
    }
    if !has_frames {
        return Err(HeldError::Unsupported("the graph has no `frames` input"));
    }
    if graph_outputs.contains(FRAMES_NAME) {
        return Err(HeldError::Unsupported("`frames` is also an output"));
    }

    // The new index of each rewritten Gather, by node position.
    let mut redirect: HashMap<usize, &str> = HashMap::new();
    let mut steps_redirected = 0;
    for (i, node) in nodes.iter().enumerate() {
        if !node.inputs.contains(&FRAMES_NAME) {
            continue;
        }
        let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
        match (node.op_type, node.inputs.as_slice()) {
            // The batch size and the shape of the input do not change.
            ("Shape", [FRAMES_NAME]) if default_domain => {}
            ("Gather", [FRAMES_NAME, index])
                if default_domain && int_attribute(node, "axis")? == Some(1) =>
            {
                let t = constants.get(index).copied().ok_or(HeldError::Unsupported(
                    "a step's frame index is not a constant",
                ))?;
                let t = if t < 0 { t + steps as i64 } else { t };
                let t = usize::try_from(t)
                    .ok()
                    .filter(|t| *t < steps)
                    .ok_or(HeldError::Unsupported("a frame index outside the movie"))?;
                let first_of_run = if t < image_on_steps {
                    0
                } else {
                    image_on_steps
                };
                if first_of_run != t {
                    steps_redirected += 1;
                }
                redirect.insert(
                    i,
                    if t < image_on_steps {
                        IMAGE_INDEX
                    } else {
                        BLANK_INDEX
                    },
                );
            }
            _ => {
                return Err(HeldError::Unsupported(
                    "`frames` feeds a node other than a step's Gather",
                ))
            }
        }
    }
    if steps_redirected == 0 {
        return Err(HeldError::Unchanged);
    }

    // Each node's inputs once the steps read the first frame of their run, and then once every
    // node that repeats an earlier one (same operator, attributes and inputs) is dropped and its
    // outputs read from the earlier one's. ONNX Runtime would merge them when it builds the
    // session, but building a session costs time in proportion to the nodes it is given.
    let mut inputs: Vec<Vec<&str>> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut ins = node.inputs.clone();
            if let Some(index) = redirect.get(&i) {
                ins[1] = index;
            }
            ins
        })
        .collect();
    let mut rename: HashMap<&str, &str> = HashMap::new();
    let mut first_of_kind: HashMap<NodeKey, usize> = HashMap::new();
    let mut dropped = vec![false; nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for input in inputs[i].iter_mut() {
            if let Some(earlier) = rename.get(input) {
                *input = earlier;
            }
        }
        let mergeable = !NONDETERMINISTIC.contains(&node.op_type)
            && node
                .outputs
                .iter()
                .all(|o| !o.is_empty() && !graph_outputs.contains(o));
        if !mergeable {
            continue;
        }
        let key = NodeKey {
            op_type: node.op_type,
            domain: node.domain,
            inputs: inputs[i].clone(),
            attributes: node.attributes.clone(),
        };
        match first_of_kind.get(&key) {
            Some(&j) if nodes[j].outputs.len() == node.outputs.len() => {
                for (mine, theirs) in node.outputs.iter().zip(&nodes[j].outputs) {
                    rename.insert(mine, theirs);
                }
                dropped[i] = true;
            }
            Some(_) => {}
            None => {
                first_of_kind.insert(key, i);
            }
        }
    }
    let nodes_merged = dropped.iter().filter(|d| **d).count();

    // Index tensors nothing reads any more are dropped, so the runtime does not warn about them.
    let mut uses: HashSet<&str> = HashSet::new();
    for (i, ins) in inputs.iter().enumerate() {
        if !dropped[i] {
            uses.extend(ins.iter().copied());
        }
    }
    let old_indices: HashSet<&str> = redirect.keys().map(|i| nodes[*i].inputs[1]).collect();
    let unused = |name: &str| {
        old_indices.contains(name) && !uses.contains(name) && !graph_outputs.contains(name)
    };
    let used_index = |name: &str| uses.contains(name);

    let mut out = Vec::with_capacity(graph.len() + 64);
    let mut node_index = 0;
    for f in Fields::new(graph) {
        let f = f?;
        match f.number {
            field::GRAPH_NODE => {
                let i = node_index;
                node_index += 1;
                let node = &nodes[i];
                if dropped[i]
                    || (node.op_type == "Constant" && node.outputs.iter().all(|o| unused(o)))
                {
                    continue;
                }
                if inputs[i] == node.inputs {
                    out.extend_from_slice(f.raw);
                } else {
                    write_len_field(
                        &mut out,
                        field::GRAPH_NODE,
                        &with_inputs(f.payload()?, &inputs[i])?,
                    );
                }
            }
            field::GRAPH_INITIALIZER => {
                if !unused(parse_tensor(f.payload()?)?.0) {
                    out.extend_from_slice(f.raw);
                }
            }
            // Before IR 4 every initializer is also listed as an input.
            field::GRAPH_INPUT | field::GRAPH_VALUE_INFO => {
                let name = value_info_name(f.payload()?)?;
                if !unused(name) && !rename.contains_key(name) {
                    out.extend_from_slice(f.raw);
                }
            }
            _ => out.extend_from_slice(f.raw),
        }
    }
    for (name, value) in [(IMAGE_INDEX, 0), (BLANK_INDEX, image_on_steps as i64)] {
        if used_index(name) {
            write_len_field(
                &mut out,
                field::GRAPH_INITIALIZER,
                &int64_scalar(name, value),
            );
        }
    }
    Ok((out, steps_redirected, nodes_merged))
}

/// The node's bytes with its inputs replaced by `inputs` (as many, in order), every other field
/// unchanged.
fn with_inputs(node: &[u8], inputs: &[&str]) -> Result<Vec<u8>, HeldError> {
    let mut out = Vec::with_capacity(node.len());
    let mut next = inputs.iter();
    for f in Fields::new(node) {
        let f = f?;
        if f.number == field::NODE_INPUT {
            let name = next.next().ok_or(HeldError::Malformed(
                "a node's inputs changed while rewriting",
            ))?;
            write_len_field(&mut out, field::NODE_INPUT, name.as_bytes());
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(out)
}

fn int64_scalar(name: &str, value: i64) -> Vec<u8> {
    let mut t = Vec::new();
    write_varint(&mut t, u64::from(field::TENSOR_DATA_TYPE) << 3);
    write_varint(&mut t, INT64);
    write_len_field(&mut t, field::TENSOR_NAME, name.as_bytes());
    write_len_field(&mut t, field::TENSOR_RAW_DATA, &value.to_le_bytes());
    t
}

/// The node, refused if it holds a subgraph (the rewrite follows inputs only).
fn parse_node(bytes: &[u8]) -> Result<Node<'_>, HeldError> {
    let node = read_node(bytes)?;
    if node.has_subgraph {
        return Err(HeldError::Unsupported("a node has a subgraph"));
    }
    Ok(node)
}

/// The node's integer attribute `name`, if set.
fn int_attribute(node: &Node, name: &str) -> Result<Option<i64>, HeldError> {
    for a in &node.attributes {
        let a = read_attribute(a)?;
        if a.name == name {
            return Ok(a.int);
        }
    }
    Ok(None)
}

/// The value of a `Constant` node, if an int64 scalar.
fn constant_scalar(node: &Node) -> Result<Option<i64>, HeldError> {
    for a in &node.attributes {
        let a = read_attribute(a)?;
        if let ("value", Some(t)) = (a.name, a.tensor) {
            return Ok(parse_tensor(t)?.1);
        }
    }
    Ok(None)
}

/// A tensor's name and, if it is an int64 scalar stored in the file, its value.
fn parse_tensor(bytes: &[u8]) -> Result<(&str, Option<i64>), HeldError> {
    let t = read_tensor(bytes)?;
    if t.external {
        return Err(HeldError::Unsupported("weights stored outside the file"));
    }
    Ok((t.name, t.int64_scalar))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attributes: &[Vec<u8>]) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            write_len_field(&mut n, field::NODE_INPUT, i.as_bytes());
        }
        for o in outputs {
            write_len_field(&mut n, field::NODE_OUTPUT, o.as_bytes());
        }
        write_len_field(&mut n, field::NODE_OP_TYPE, op.as_bytes());
        for a in attributes {
            write_len_field(&mut n, field::NODE_ATTRIBUTE, a);
        }
        n
    }

    fn axis(v: u64) -> Vec<u8> {
        let mut a = Vec::new();
        write_len_field(&mut a, field::ATTRIBUTE_NAME, b"axis");
        write_varint(&mut a, u64::from(field::ATTRIBUTE_INT) << 3);
        write_varint(&mut a, v);
        a
    }

    /// A `Constant` node's `value`, stored as int64_data (initializers use raw_data).
    fn constant(name: &str, v: u64) -> Vec<u8> {
        let mut t = Vec::new();
        write_varint(&mut t, u64::from(field::TENSOR_DATA_TYPE) << 3);
        write_varint(&mut t, INT64);
        write_varint(&mut t, u64::from(field::TENSOR_INT64_DATA) << 3);
        write_varint(&mut t, v);
        let mut a = Vec::new();
        write_len_field(&mut a, field::ATTRIBUTE_NAME, b"value");
        write_len_field(&mut a, field::ATTRIBUTE_TENSOR, &t);
        node("Constant", &[], &[name], &[a])
    }

    fn value_info(name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        write_len_field(&mut v, field::VALUE_INFO_NAME, name.as_bytes());
        v
    }

    /// A 4-step movie: steps 0 and 1 read their frame through Constant nodes, steps 2 and 3
    /// through initializers; `i1` is also read by an unrelated node, and `extra` nodes follow.
    fn model(extra: &[Vec<u8>]) -> Vec<u8> {
        let mut g = Vec::new();
        write_len_field(&mut g, field::GRAPH_NODE, &constant("i0", 0));
        write_len_field(&mut g, field::GRAPH_NODE, &constant("i1", 1));
        write_len_field(
            &mut g,
            field::GRAPH_NODE,
            &node("Shape", &["frames"], &["shape"], &[]),
        );
        for (t, index) in ["i0", "i1", "i2", "i3"].iter().enumerate() {
            let out = format!("x{t}");
            let gather = node("Gather", &["frames", index], &[&out], &[axis(1)]);
            write_len_field(&mut g, field::GRAPH_NODE, &gather);
        }
        write_len_field(
            &mut g,
            field::GRAPH_NODE,
            &node("Add", &["shape", "i1"], &["y"], &[]),
        );
        for n in extra {
            write_len_field(&mut g, field::GRAPH_NODE, n);
        }
        write_len_field(&mut g, field::GRAPH_INITIALIZER, &int64_scalar("i2", 2));
        // A negative index counts from the end.
        write_len_field(&mut g, field::GRAPH_INITIALIZER, &int64_scalar("i3", -1));
        write_len_field(&mut g, field::GRAPH_INPUT, &value_info("frames"));
        for out in ["x0", "x1", "x2", "x3", "y"] {
            write_len_field(&mut g, field::GRAPH_OUTPUT, &value_info(out));
        }
        let mut m = Vec::new();
        write_varint(&mut m, 1 << 3); // ir_version 8
        write_varint(&mut m, 8);
        write_len_field(&mut m, field::MODEL_GRAPH, &g);
        write_len_field(&mut m, 14, b"metadata stays");
        m
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

    /// (op_type, inputs, outputs) of each node and the (name, scalar) of each initializer.
    type Summary = (
        Vec<(String, Vec<String>, Vec<String>)>,
        Vec<(String, Option<i64>)>,
    );

    fn summary(model: &[u8]) -> Summary {
        let g = graph_of(model);
        let (mut nodes, mut inits) = (vec![], vec![]);
        for f in Fields::new(&g).map(Result::unwrap) {
            match f.number {
                field::GRAPH_NODE => {
                    let n = parse_node(f.payload().unwrap()).unwrap();
                    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
                    nodes.push((n.op_type.to_string(), own(&n.inputs), own(&n.outputs)));
                }
                field::GRAPH_INITIALIZER => {
                    let (name, v) = parse_tensor(f.payload().unwrap()).unwrap();
                    inits.push((name.to_string(), v));
                }
                _ => {}
            }
        }
        (nodes, inits)
    }

    #[test]
    fn each_step_reads_the_first_frame_of_its_run() {
        let m = model(&[]);
        let held = hold_image(&m, 4, 2).unwrap();
        // Step 1 now reads frame 0, step 3 frame 2.
        assert_eq!(held.steps_redirected, 2);
        let (nodes, inits) = summary(&held.bytes);
        let gathers: Vec<&str> = nodes
            .iter()
            .filter(|n| n.0 == "Gather")
            .map(|n| n.1[1].as_str())
            .collect();
        assert_eq!(
            gathers,
            [IMAGE_INDEX, IMAGE_INDEX, BLANK_INDEX, BLANK_INDEX]
        );
        // i0, i2 and i3 are read by nothing now and go; i1 still feeds the Add.
        let ops: Vec<&str> = nodes.iter().map(|n| n.2[0].as_str()).collect();
        assert_eq!(ops, ["i1", "shape", "x0", "x1", "x2", "x3", "y"]);
        assert_eq!(
            inits,
            [
                (IMAGE_INDEX.to_string(), Some(0)),
                (BLANK_INDEX.to_string(), Some(2))
            ]
        );
        assert!(String::from_utf8_lossy(&held.bytes).contains("metadata stays"));
    }

    #[test]
    fn nodes_that_repeat_an_earlier_one_are_dropped() {
        // g0 and g1 now read the same frame, so they, their Relus, the two equal Constants and
        // the Adds that read them compute the same thing twice.
        let mut value = Vec::new();
        write_len_field(&mut value, field::ATTRIBUTE_NAME, b"value");
        write_len_field(&mut value, field::ATTRIBUTE_TENSOR, &int64_scalar("", 7));
        let extra = [
            node("Gather", &["frames", "i0"], &["g0"], &[axis(1)]),
            node("Gather", &["frames", "i1"], &["g1"], &[axis(1)]),
            node("Relu", &["g0"], &["r0"], &[]),
            node("Relu", &["g1"], &["r1"], &[]),
            node("Constant", &[], &["c0"], std::slice::from_ref(&value)),
            node("Constant", &[], &["c1"], std::slice::from_ref(&value)),
            node("Add", &["r0", "c0"], &["a0"], &[]),
            node("Add", &["r1", "c1"], &["a1"], &[]),
            node("Concat", &["a0", "a1"], &["z"], &[axis(0)]),
        ];
        let mut m = model(&extra);
        // z is an output too: the model helper lists x0..x3 and y; add z.
        let g = {
            let mut g = graph_of(&m);
            write_len_field(&mut g, field::GRAPH_OUTPUT, &value_info("z"));
            g
        };
        m = with_graph(&m, &g).unwrap();
        let held = hold_image(&m, 4, 2).unwrap();
        assert_eq!(held.nodes_merged, 4, "g1, r1, c1, a1");
        let (nodes, _) = summary(&held.bytes);
        let concat = nodes.iter().find(|n| n.0 == "Concat").unwrap();
        assert_eq!(concat.1, ["a0", "a0"]);
        let outputs: Vec<&str> = nodes.iter().map(|n| n.2[0].as_str()).collect();
        for gone in ["g1", "r1", "c1", "a1"] {
            assert!(!outputs.contains(&gone), "{gone}");
        }
        // x1 is a graph output: kept although it repeats x0.
        assert!(outputs.contains(&"x1") && outputs.contains(&"g0"));
    }

    #[test]
    fn a_movie_all_image_reads_frame_zero_only() {
        let held = hold_image(&model(&[]), 4, 4).unwrap();
        assert_eq!(held.steps_redirected, 3);
        let (_, inits) = summary(&held.bytes);
        assert_eq!(inits, [(IMAGE_INDEX.to_string(), Some(0))]);
    }

    #[test]
    fn a_graph_already_reading_each_run_once_is_unchanged() {
        let mut g = Vec::new();
        write_len_field(&mut g, field::GRAPH_NODE, &constant("i0", 0));
        let gather = node("Gather", &["frames", "i0"], &["x"], &[axis(1)]);
        write_len_field(&mut g, field::GRAPH_NODE, &gather);
        write_len_field(&mut g, field::GRAPH_INPUT, &value_info("frames"));
        let mut m = Vec::new();
        write_len_field(&mut m, field::MODEL_GRAPH, &g);
        assert_eq!(hold_image(&m, 1, 1).unwrap_err(), HeldError::Unchanged);
    }

    #[test]
    fn anything_else_reading_the_frames_is_left_alone() {
        let unsupported = |extra: Vec<u8>| {
            matches!(
                hold_image(&model(&[extra]), 4, 2),
                Err(HeldError::Unsupported(_))
            )
        };
        assert!(unsupported(node("Slice", &["frames", "i0"], &["s"], &[])));
        assert!(unsupported(node(
            "Gather",
            &["frames", "i0"],
            &["s"],
            &[axis(0)]
        )));
        assert!(unsupported(node(
            "Gather",
            &["frames", "shape"],
            &["s"],
            &[axis(1)]
        )));
        let mut sub = Vec::new();
        write_len_field(&mut sub, field::ATTRIBUTE_GRAPH, &[]);
        assert!(unsupported(node("If", &["y"], &["s"], &[sub])));
        // A frame index past the movie.
        assert!(matches!(
            hold_image(&model(&[]), 2, 1),
            Err(HeldError::Unsupported(_))
        ));
        assert!(matches!(
            hold_image(&model(&[]), 4, 0),
            Err(HeldError::Unsupported(_))
        ));
    }

    #[test]
    fn cut_or_corrupt_bytes_are_errors_not_panics() {
        let m = model(&[]);
        for end in 0..m.len() {
            let _ = hold_image(&m[..end], 4, 2);
        }
        for i in 0..m.len() {
            let mut bad = m.clone();
            bad[i] ^= 0xff;
            let _ = hold_image(&bad, 4, 2);
        }
        assert!(hold_image(&[], 4, 2).is_err());
    }

    #[test]
    fn the_committed_model_reads_each_run_of_equal_frames_once() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/rgc_fmnist.onnx");
        let bytes = std::fs::read(path).unwrap();
        // 8 steps, all of them the image: steps 1..8 read frame 0.
        let held = hold_image(&bytes, 8, 8).unwrap();
        assert_eq!(held.steps_redirected, 7);
    }
}
