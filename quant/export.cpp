// export.cpp - the deployment file (see export.h for its layout).
#include "quant/export.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "autograd/autograd.h"

namespace anybit::quant {

std::vector<uint8_t> pack_codes(const std::vector<int64_t>& codes, int bits) {
  AB_CHECK(bits >= 1 && bits <= 16, "pack_codes: ", bits, " bits per code (expected 1..16)");
  const int64_t n = (int64_t)codes.size(), plane = (n + 7) / 8;
  std::vector<uint8_t> out(plane * bits, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = codes[i];
    AB_CHECK(c >= 0 && c < (int64_t(1) << bits), "pack_codes: code ", c, " does not fit in ", bits, " bits");
    for (int k = 0; k < bits; ++k)  // plane k holds bit (bits - 1 - k): the most significant first
      if ((c >> (bits - 1 - k)) & 1) out[k * plane + i / 8] |= uint8_t(1u << (i % 8));
  }
  return out;
}

std::vector<int64_t> unpack_codes(const uint8_t* bytes, size_t nbytes, int64_t count, int bits, int planes) {
  AB_CHECK(bits >= 1 && bits <= 16, "unpack_codes: ", bits, " bits per code (expected 1..16)");
  if (planes < 0) planes = bits;
  AB_CHECK(planes >= 1 && planes <= bits, "unpack_codes: ", planes, " planes of ", bits);
  const int64_t plane = (count + 7) / 8;
  AB_CHECK((int64_t)nbytes >= plane * planes, "unpack_codes: ", nbytes, " bytes hold fewer than ", planes,
           " planes of ", count, " codes");
  std::vector<int64_t> out(count, 0);
  for (int k = 0; k < planes; ++k)
    for (int64_t i = 0; i < count; ++i) out[i] = (out[i] << 1) | ((bytes[k * plane + i / 8] >> (i % 8)) & 1);
  return out;
}

namespace {

Tensor scalar_f64(double v) { return Tensor::from_vector(std::vector<double>{v}, {1}); }
Tensor scalar_i64(int64_t v) { return Tensor::from_vector(std::vector<int64_t>{v}, {1}); }
Tensor bytes_tensor(const std::vector<uint8_t>& b) {
  Tensor t = Tensor::empty({(int64_t)b.size()}, DType::U8);
  std::copy(b.begin(), b.end(), t.data<uint8_t>());
  return t;
}
std::string bit_key(int b) { return "b" + std::to_string(b); }

// What the writer collects: each tensor with the bit-widths that need it (empty: all of them).
struct Entry {
  std::string name;
  Tensor t;
  std::set<int> bits;
  int planes = 0;  // a shared code set of this many bit planes: b bits read the first b of them
};

double tensor_bytes(const Tensor& t) { return (double)t.numel() * dtype_size(t.dtype()); }

}  // namespace

std::vector<ExportSizes> export_model(QuantModel& model, const std::vector<int>& bits, const std::string& path,
                                      const nn::Metadata& metadata) {
  AB_CHECK(!bits.empty(), "export: no bit-width to export");
  for (int b : bits)
    AB_CHECK(std::find(model.bit_set().begin(), model.bit_set().end(), b) != model.bit_set().end(), "export: ",
             b, " bits is not in the model's bit set");
  NoGradGuard ng;
  const int saved_bits = model.bits();
  std::vector<Entry> entries;
  std::vector<std::string> owned_prefixes;  // modules written in their own form below
  std::string act_quant;
  std::vector<std::string> quantized_layers;
  for (auto& [name, m] : model.net().named_modules()) {
    if (auto* q = dynamic_cast<QuantizedLayer*>(m.get())) {
      owned_prefixes.push_back(name + ".");
      quantized_layers.push_back(name);
      act_quant = q->act_quantizer().name();
      Tensor& w = q->float_weight();
      entries.push_back({name + ".shape", Tensor::from_vector(std::vector<int64_t>(w.shape().begin(), w.shape().end()),
                                                               {(int64_t)w.dim()}), {}});
      for (auto& [pname, t] : m->named_parameters())
        if (pname == "bias") entries.push_back({name + ".bias", t.detach().contiguous(), {}});
      std::map<int, Tensor> shared;  // code_bits -> that code set (the one stored as L.codes)
      std::map<int, IntegerWeights> forms;
      for (int b : bits)
        if (b < 32) {
          forms[b] = q->weight_quantizer().integer_weights(w, b);
          if (forms[b].code_bits > b && !shared.count(forms[b].code_bits))  // lower bits are its top bits
            shared[forms[b].code_bits] = q->weight_quantizer().integer_weights(w, forms[b].code_bits).codes;
        }
      for (int b : bits) {
        const std::string k = name + "." + bit_key(b);
        for (auto& p : q->act_quantizer().params())
          if (p.bits == b) entries.push_back({name + "." + p.name, p.tensor->detach().clone(), {b}});
        if (b >= 32) {
          entries.push_back({k + ".weight", q->quantized_weight(b).detach().contiguous(), {b}});
          continue;
        }
        const IntegerWeights& iw = forms[b];
        int shift = 0;
        if (shared.count(iw.code_bits)) {  // the top bits of the shared set (b = its own bits: all of it)
          shift = iw.code_bits - b;
          auto mine = iw.codes.to_vector<int64_t>(), top = shared[iw.code_bits].to_vector<int64_t>();
          for (size_t i = 0; i < mine.size(); ++i)
            AB_CHECK(mine[i] == (top[i] >> shift) << shift, "export: ", name, ": the ", b, "-bit codes are not the top bits of the ",
                     iw.code_bits, "-bit codes");
        } else {
          entries.push_back({k + ".codes", bytes_tensor(pack_codes(iw.codes.to_vector<int64_t>(), iw.code_bits)), {b}});
          entries.push_back({k + ".code_bits", scalar_i64(iw.code_bits), {b}});
        }
        entries.push_back({k + ".scale", scalar_f64(iw.scale), {b}});
        entries.push_back({k + ".offset", scalar_f64(iw.offset), {b}});
        entries.push_back({k + ".shift", scalar_i64(shift), {b}});
      }
      AB_CHECK(shared.size() <= 1, "export: ", name, " would need two shared code sets");
      for (auto& [cb, codes] : shared) {
        std::set<int> users;
        for (int b : bits)
          if (b < cb) users.insert(b);
        if (std::find(bits.begin(), bits.end(), cb) != bits.end()) users.insert(cb);
        entries.push_back({name + ".codes", bytes_tensor(pack_codes(codes.to_vector<int64_t>(), cb)), users, cb});
        entries.push_back({name + ".code_bits", scalar_i64(cb), users});
      }
    } else if (auto* mb = dynamic_cast<MultiBatchNorm2d*>(m.get())) {
      owned_prefixes.push_back(name + ".");
      for (int b : bits) {
        nn::BatchNorm2d& bn = mb->set(b);
        // scale = gamma / sqrt(var + eps), shift = beta - mean * scale (in double, stored float32)
        auto g = bn.weight_.to_vector<double>(), be = bn.bias_.to_vector<double>();
        auto mu = bn.running_mean_.to_vector<double>(), var = bn.running_var_.to_vector<double>();
        std::vector<float> scale(g.size()), shift(g.size());
        for (size_t c = 0; c < g.size(); ++c) {
          const double s = g[c] / std::sqrt(var[c] + bn.eps());
          scale[c] = float(s);
          shift[c] = float(be[c] - mu[c] * s);
        }
        const int64_t C = (int64_t)g.size();
        entries.push_back({name + "." + bit_key(b) + ".scale", Tensor::from_vector(scale, {C}), {b}});
        entries.push_back({name + "." + bit_key(b) + ".shift", Tensor::from_vector(shift, {C}), {b}});
      }
    }
  }
  // The float tensors of every other module (the FP stem and classifier), as they are.
  for (auto& [name, t] : model.net().state_dict()) {
    bool owned = false;
    for (auto& p : owned_prefixes) owned = owned || name.rfind(p, 0) == 0;
    if (!owned && t.dtype() == DType::F32) entries.push_back({name, t.detach().contiguous(), {}});
  }

  nn::NamedTensors tensors;
  for (auto& e : entries) tensors.emplace_back(e.name, e.t);
  nn::Metadata meta = metadata;
  std::string bits_text;
  for (int b : bits) bits_text += (bits_text.empty() ? "" : ",") + std::to_string(b);
  meta["format"] = "anybit-export-1";
  meta["arch"] = model.arch();
  meta["export_bits"] = bits_text;
  meta["act_quant"] = act_quant;
  nn::write_safetensors(path, tensors, meta);

  // Read it back: every quantized layer's weights at every bit-width, rebuilt from the file, must
  // be the layer's own.
  nn::SafeTensors file = nn::read_safetensors(path);
  for (auto& [name, m] : model.net().named_modules()) {
    auto* q = dynamic_cast<QuantizedLayer*>(m.get());
    if (!q) continue;
    for (int b : bits) {
      auto mine = q->quantized_weight(b).to_vector<double>(), back = exported_weights(file, name, b).to_vector<double>();
      double diff = 0, mag = 0;
      for (size_t i = 0; i < mine.size(); ++i) {
        diff = std::max(diff, std::abs(mine[i] - back[i]));
        mag = std::max(mag, std::abs(mine[i]));
      }
      AB_CHECK(diff <= 1e-5 * mag + 1e-7, "export: ", path, ": ", name, " at ", b, " bits differs from the model by ",
               diff, " (weights up to ", mag, ")");
    }
  }
  model.set_bits(saved_bits);

  std::vector<ExportSizes> sizes;
  for (int b : bits) {
    ExportSizes s{b, 0};
    for (auto& e : entries)
      if (e.bits.empty() || e.bits.count(b)) s.bytes += e.planes ? tensor_bytes(e.t) * std::min(b, e.planes) / e.planes : tensor_bytes(e.t);
    sizes.push_back(s);
  }
  return sizes;
}

Tensor exported_weights(const nn::SafeTensors& file, const std::string& layer, int bits) {
  auto need = [&](const std::string& n) -> const Tensor& {
    const Tensor* t = file.find(n);
    AB_CHECK(t, "export file: no tensor ", n, " (layer ", layer, " at ", bits, " bits)");
    return *t;
  };
  const std::string k = layer + "." + bit_key(bits);
  if (const Tensor* w = file.find(k + ".weight")) return *w;
  auto shape_v = need(layer + ".shape").to_vector<int64_t>();
  Shape shape(shape_v.begin(), shape_v.end());
  int64_t count = 1;
  for (auto d : shape) count *= d;
  const bool own = file.find(k + ".codes") != nullptr;
  const Tensor& codes = need(own ? k + ".codes" : layer + ".codes");
  const int code_bits = (int)need(own ? k + ".code_bits" : layer + ".code_bits").to_vector<int64_t>()[0];
  const int shift = (int)need(k + ".shift").to_vector<int64_t>()[0];
  const double scale = need(k + ".scale").to_vector<double>()[0], offset = need(k + ".offset").to_vector<double>()[0];
  // the first code_bits - shift planes are the top bits: what this bit-width reads of the set
  std::vector<int64_t> u = unpack_codes(codes.data<uint8_t>(), (size_t)codes.numel(), count, code_bits, code_bits - shift);
  std::vector<float> w(count);
  for (int64_t i = 0; i < count; ++i) w[i] = float(scale * double(u[i] << shift) + offset);
  return Tensor::from_vector(w, shape);
}

}  // namespace anybit::quant
