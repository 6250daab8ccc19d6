// onnx_export.cpp - the QDQ ONNX graph of an exported network (see onnx_export.h).
#include "quant/onnx_export.h"

#include <cmath>
#include <cstring>
#include <fstream>

#include "nn/checkpoint.h"

namespace anybit::quant {

namespace {

// ---- a protobuf encoder: just what onnx.proto needs ----------------------------------------------
// A message is a string of fields; a field is a key (number << 3 | wire type) and a value:
// wire type 0 a varint, 2 a length and that many bytes (strings, bytes, sub-messages), 5 four
// bytes (float). Repeated fields are the same field written again.
class Proto {
 public:
  Proto& varint(int field, uint64_t v) {
    key(field, 0);
    raw_varint(v);
    return *this;
  }
  Proto& bytes(int field, const std::string& b) {
    key(field, 2);
    raw_varint(b.size());
    out_ += b;
    return *this;
  }
  Proto& message(int field, const Proto& m) { return bytes(field, m.out_); }
  Proto& f32(int field, float v) {
    key(field, 5);
    char b[4];
    std::memcpy(b, &v, 4);  // little-endian, as protobuf's fixed32 (x86, ARM)
    out_.append(b, 4);
    return *this;
  }
  const std::string& str() const { return out_; }

 private:
  void key(int field, int wire) { raw_varint(uint64_t(field) << 3 | uint64_t(wire)); }
  void raw_varint(uint64_t v) {
    do {
      uint8_t b = v & 0x7f;
      v >>= 7;
      out_.push_back(char(v ? b | 0x80 : b));
    } while (v);
  }
  std::string out_;
};

// onnx.proto's numbers.
enum ElemType { kFloat = 1, kUint8 = 2, kInt8 = 3, kInt32 = 6, kInt64 = 7 };
enum AttrType { kAttrInt = 2, kAttrInts = 7 };

// The graph being built: nodes, initializers, fresh names.
class Graph {
 public:
  std::string constant(const std::string& name, const std::vector<int64_t>& dims, ElemType type, const void* data,
                       size_t bytes) {
    Proto t;
    for (int64_t d : dims) t.varint(1, (uint64_t)d);  // dims
    t.varint(2, type);                                // data_type
    t.bytes(8, name);                                 // name
    t.bytes(9, std::string(static_cast<const char*>(data), bytes));  // raw_data
    graph_.message(5, t);                             // GraphProto.initializer
    return name;
  }
  std::string floats(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& v) {
    return constant(name, dims, kFloat, v.data(), v.size() * 4);
  }
  std::string scalar(const std::string& name, float v) { return floats(name, {}, {v}); }

  // A node; returns its output's name. ints: (attribute name, values), one value = an INT.
  std::string node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output,
                   const std::vector<std::pair<std::string, std::vector<int64_t>>>& attrs = {}, bool single = false) {
    Proto n;
    for (auto& i : inputs) n.bytes(1, i);
    n.bytes(2, output);
    n.bytes(3, output);  // the node is named after its output
    n.bytes(4, op);
    for (auto& [name, values] : attrs) {
      Proto a;
      a.bytes(1, name);
      if (single && values.size() == 1) {
        a.varint(20, kAttrInt).varint(3, (uint64_t)values[0]);
      } else {
        a.varint(20, kAttrInts);
        for (int64_t v : values) a.varint(8, (uint64_t)v);
      }
      n.message(5, a);
    }
    graph_.message(1, n);
    return output;
  }
  std::string int_attr_node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output,
                            const std::string& attr, int64_t value) {
    return node(op, inputs, output, {{attr, {value}}}, true);
  }

  Proto& proto() { return graph_; }

 private:
  Proto graph_;
};

// A value info: name, float tensor of the given dims (negative: a free dimension, -1 "N", -2 "H",
// -3 "W").
Proto value_info(const std::string& name, const std::vector<int64_t>& dims) {
  Proto shape;
  for (int64_t d : dims) {
    Proto dim;
    if (d < 0)
      dim.bytes(2, d == -1 ? "N" : (d == -2 ? "H" : "W"));  // dim_param
    else
      dim.varint(1, (uint64_t)d);  // dim_value
    shape.message(1, dim);
  }
  Proto tensor;
  tensor.varint(1, kFloat).message(2, shape);
  Proto type;
  type.message(1, tensor);
  Proto v;
  v.bytes(1, name).message(2, type);
  return v;
}

// x -> Clip(0, D (2^b - 1)) -> QuantizeLinear(D, 0) -> DequantizeLinear(D): the codes of `act`.
std::string quantize_activation(Graph& g, const std::string& x, const ActCodes& act, const std::string& at) {
  const std::string lo = g.scalar(at + ".act_lo", 0.0f), hi = g.scalar(at + ".act_hi", act.unit * act.levels);
  const std::string scale = g.scalar(at + ".act_scale", act.unit);
  const uint8_t zero = 0;
  const std::string zp = g.constant(at + ".act_zero_point", {}, kUint8, &zero, 1);
  std::string y = g.node("Clip", {x, lo, hi}, at + ".act_clip");
  y = g.node("QuantizeLinear", {y, scale, zp}, at + ".act_codes");
  return g.node("DequantizeLinear", {y, scale, zp}, at + ".act_q");
}

// The conv's weights: its codes as an integer initializer -> DequantizeLinear (-> + offset).
std::string dequantized_weights(Graph& g, const IntConv& c) {
  const std::vector<int64_t> dims = {c.cout, c.cin, c.kernel, c.kernel};
  const double S = c.weight_scale, O = c.weight_offset;
  const std::string at = c.name;
  if (O == 0.0) {  // LSQ: w = S q
    g.constant(at + ".weight_codes", dims, kInt8, c.codes.data(), c.codes.size());
    return g.node("DequantizeLinear", {at + ".weight_codes", g.scalar(at + ".weight_scale", float(S))}, at + ".weight_q");
  }
  if (std::abs(O - S / 2) <= 1e-9 * std::abs(S)) {  // DoReFa: w = S q + S / 2 = (S / 2)(2q + 1)
    std::vector<int32_t> odd(c.codes.size());
    for (size_t i = 0; i < odd.size(); ++i) odd[i] = 2 * int32_t(c.codes[i]) + 1;
    const std::string scale = g.scalar(at + ".weight_scale", float(S / 2));
    if (c.weight_bits <= 7) {  // |2q + 1| <= 2^b - 1 <= 127
      std::vector<int8_t> small(odd.begin(), odd.end());
      g.constant(at + ".weight_codes", dims, kInt8, small.data(), small.size());
    } else {
      g.constant(at + ".weight_codes", dims, kInt32, odd.data(), odd.size() * 4);
    }
    return g.node("DequantizeLinear", {at + ".weight_codes", scale}, at + ".weight_q");
  }
  g.constant(at + ".weight_codes", dims, kInt8, c.codes.data(), c.codes.size());
  std::string w = g.node("DequantizeLinear", {at + ".weight_codes", g.scalar(at + ".weight_scale", float(S))},
                         at + ".weight_dq");
  return g.node("Add", {w, g.scalar(at + ".weight_offset", float(O))}, at + ".weight_q");
}

// BN folded: y * scale + shift, per channel (shapes (1, C, 1, 1)).
std::string folded_bn(Graph& g, const std::string& x, const std::vector<float>& scale, const std::vector<float>& shift,
                      const std::string& at) {
  const int64_t C = (int64_t)scale.size();
  std::string y = g.node("Mul", {x, g.floats(at + ".bn_scale", {1, C, 1, 1}, scale)}, at + ".bn_mul");
  return g.node("Add", {y, g.floats(at + ".bn_shift", {1, C, 1, 1}, shift)}, at + ".bn");
}

// A quantized conv with its BN: quantize x, Conv with the dequantized weights, BN.
std::string conv_bn(Graph& g, const std::string& x, const IntConv& c) {
  std::string xq = quantize_activation(g, x, c.act, c.name);
  std::string w = dequantized_weights(g, c);
  std::vector<std::string> in = {xq, w};
  bool has_bias = false;
  for (float b : c.bias) has_bias = has_bias || b != 0.0f;
  if (has_bias) in.push_back(g.floats(c.name + ".bias", {c.cout}, c.bias));
  std::string y = g.node("Conv", in, c.name + ".conv",
                         {{"kernel_shape", {c.kernel, c.kernel}},
                          {"strides", {c.stride, c.stride}},
                          {"pads", {c.pad, c.pad, c.pad, c.pad}}});
  return folded_bn(g, y, c.bn_scale, c.bn_shift, c.name);
}

std::vector<int64_t> dims_of(const Tensor& t) { return std::vector<int64_t>(t.shape().begin(), t.shape().end()); }

}  // namespace

void write_onnx(const IntegerResNet& net, const std::string& path) {
  Graph g;
  // The FP stem: Conv, BN, Relu.
  const Tensor& sw = net.stem_weight();
  auto swv = sw.contiguous().to_vector<float>();
  std::vector<std::string> stem_in = {"images", g.floats("conv1.weight", dims_of(sw), swv)};
  if (net.stem_bias().defined()) stem_in.push_back(g.floats("conv1.bias", dims_of(net.stem_bias()), net.stem_bias().to_vector<float>()));
  const int64_t k = sw.size(2), pad = k / 2;
  std::string x = g.node("Conv", stem_in, "conv1.conv", {{"kernel_shape", {k, k}}, {"strides", {1, 1}}, {"pads", {pad, pad, pad, pad}}});
  x = g.node("Relu", {folded_bn(g, x, net.stem_bn_scale(), net.stem_bn_shift(), "bn1")}, "bn1.relu");
  // The residual blocks.
  for (const IntBlock& b : net.blocks()) {
    const std::string block = b.conv1.name.substr(0, b.conv1.name.size() - 6);  // "layer2.0"
    std::string y = g.node("Relu", {conv_bn(g, x, b.conv1)}, b.conv1.name + ".relu");
    y = conv_bn(g, y, b.conv2);
    const std::string shortcut = b.has_shortcut ? conv_bn(g, x, b.shortcut) : x;
    x = g.node("Relu", {g.node("Add", {y, shortcut}, block + ".add")}, block + ".out");
  }
  // The head: global average pool and the FP classifier.
  x = g.node("GlobalAveragePool", {x}, "pool");
  x = g.int_attr_node("Flatten", {x}, "pool.flat", "axis", 1);
  const Tensor& fw = net.fc_weight();
  g.floats("fc.weight", dims_of(fw), fw.contiguous().to_vector<float>());
  g.floats("fc.bias", dims_of(net.fc_bias()), net.fc_bias().to_vector<float>());
  g.int_attr_node("Gemm", {x, "fc.weight", "fc.bias"}, "logits", "transB", 1);

  Proto& graph = g.proto();
  graph.bytes(2, "anybit_w" + std::to_string(net.bits()) + "a" + std::to_string(net.bits()));  // name
  graph.message(11, value_info("images", {-1, sw.size(1), -2, -3}));                          // input
  graph.message(12, value_info("logits", {-1, fw.size(0)}));                                  // output
  Proto opset;
  opset.bytes(1, "").varint(2, 13);
  Proto model;
  model.varint(1, 7)                 // ir_version 7 (ONNX 1.7+, opset 13)
      .bytes(2, "anybit")            // producer_name
      .bytes(3, "1")                 // producer_version
      .message(8, opset)             // opset_import
      .message(7, graph);            // graph
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    AB_CHECK(f, "export: cannot write ", tmp);
    f.write(model.str().data(), (std::streamsize)model.str().size());
    AB_CHECK(f.good(), "export: writing ", tmp, " failed");
  }
  AB_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "export: cannot rename ", tmp, " to ", path);
}

}  // namespace anybit::quant
