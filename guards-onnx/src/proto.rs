//! The few ONNX protobuf messages the exporter writes, encoded by hand (proto3 wire format).
//! Field numbers are those of `onnx.proto` (IR version 8); only what the MiniLM graph needs.

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED32: u8 = 5;
const LEN: u8 = 2;

/// A message being encoded.
#[derive(Default)]
pub struct Msg(Vec<u8>);

impl Msg {
    pub fn new() -> Msg {
        Msg::default()
    }

    fn key(&mut self, field: u32, wire: u8) {
        varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }

    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, VARINT);
        // Negative int64 values are ten-byte two's complement varints in proto3.
        varint(&mut self.0, v as u64);
        self
    }

    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, LEN);
        varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    pub fn str(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    pub fn msg(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// ONNX `TensorProto.DataType` values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32 = 1,
    I64 = 7,
}

/// `AttributeProto` values used here.
pub enum Attr<'a> {
    Int(i64),
    Float(f32),
    Ints(&'a [i64]),
}

/// `NodeProto`.
pub fn node(
    op: &str,
    domain: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: &[(&str, Attr<'_>)],
) -> Msg {
    let mut m = Msg::new();
    inputs.iter().for_each(|i| {
        m.str(1, i);
    });
    outputs.iter().for_each(|o| {
        m.str(2, o);
    });
    m.str(3, outputs[0]).str(4, op);
    if !domain.is_empty() {
        m.str(7, domain);
    }
    for (name, attr) in attrs {
        let mut a = Msg::new();
        a.str(1, name);
        match attr {
            Attr::Float(f) => a.float(2, *f).int(20, 1),
            Attr::Int(i) => a.int(3, *i).int(20, 2),
            Attr::Ints(v) => {
                v.iter().for_each(|i| {
                    a.int(8, *i);
                });
                a.int(20, 7)
            }
        };
        m.msg(5, &a);
    }
    m
}

/// `TensorProto` whose bytes are stored inline.
pub fn tensor_inline(name: &str, elem: Elem, dims: &[i64], raw: &[u8]) -> Msg {
    let mut m = Msg::new();
    dims.iter().for_each(|d| {
        m.int(1, *d);
    });
    m.int(2, elem as i64).str(8, name).bytes(9, raw);
    m
}

/// `TensorProto` whose bytes live in `location` (relative to the model file) at `offset`.
pub fn tensor_external(
    name: &str,
    elem: Elem,
    dims: &[i64],
    location: &str,
    offset: u64,
    length: u64,
) -> Msg {
    let mut m = Msg::new();
    dims.iter().for_each(|d| {
        m.int(1, *d);
    });
    m.int(2, elem as i64).str(8, name);
    for (k, v) in [
        ("location", location.to_string()),
        ("offset", offset.to_string()),
        ("length", length.to_string()),
    ] {
        let mut e = Msg::new();
        e.str(1, k).str(2, &v);
        m.msg(13, &e);
    }
    m.int(14, 1); // data_location = EXTERNAL
    m
}

/// `ModelProto` bytes around `graph`: IR version 8, default-domain opset 17, featherguard as the
/// producer.
pub fn model(graph: &Msg) -> Vec<u8> {
    let mut opset = Msg::new();
    opset.str(1, "").int(2, 17);
    let mut model = Msg::new();
    model
        .int(1, 8)
        .str(2, "featherguard")
        .str(3, env!("CARGO_PKG_VERSION"))
        .msg(7, graph)
        .msg(8, &opset);
    model.finish()
}

/// A dimension of a graph input or output: fixed or symbolic.
pub enum Dim<'a> {
    Fixed(i64),
    Named(&'a str),
}

/// `ValueInfoProto` of a tensor.
pub fn value_info(name: &str, elem: Elem, dims: &[Dim<'_>]) -> Msg {
    let mut shape = Msg::new();
    for d in dims {
        let mut dm = Msg::new();
        match d {
            Dim::Fixed(v) => dm.int(1, *v),
            Dim::Named(s) => dm.str(2, s),
        };
        shape.msg(1, &dm);
    }
    let mut tt = Msg::new();
    tt.int(1, elem as i64).msg(2, &shape);
    let mut ty = Msg::new();
    ty.msg(1, &tt);
    let mut m = Msg::new();
    m.str(1, name).msg(2, &ty);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_wire_format() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xAC, 0x02]);
        let mut m = Msg::new();
        m.int(1, -1);
        assert_eq!(m.finish().len(), 11);
    }

    #[test]
    fn node_encodes_op_and_attributes() {
        let n = node("Gemm", "", &["a", "b"], &["c"], &[("transB", Attr::Int(1))]).finish();
        let s = String::from_utf8_lossy(&n);
        assert!(s.contains("Gemm") && s.contains("transB"));
    }
}
