// dtype.h - element types and devices.
//
// float32 is the compute type; float64 exists so gradient checks can use central differences
// without drowning in rounding error; the integer types hold labels, indices, images and
// quantized codes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace anybit {

enum class DType { F32, F64, I32, I64, U8, I8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "float32", ... (PyTorch's names)
bool is_floating(DType t);

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct dtype_of<int8_t> { static constexpr DType value = DType::I8; };

struct Device {
  enum Type { CPU, CUDA } type = CPU;
  int index = 0;
  Device() = default;
  Device(Type t, int i = 0) : type(t), index(i) {}
  bool is_cpu() const { return type == CPU; }
  bool is_cuda() const { return type == CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;                 // "cpu", "cuda:0"
  static Device parse(const std::string&);  // inverse of str(); "cuda" means cuda:0
};

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);

// AB_DISPATCH_FLOAT(dtype, "op", [&] { ... scalar_t ... }) runs the lambda with scalar_t the C++
// type of dtype, a floating one; other dtypes throw, naming the op. AB_DISPATCH_ALL does the same
// for all six dtypes. To dispatch on two dtypes, name the outer type before the inner dispatch:
// AB_DISPATCH_ALL(a, "op", [&] { using A = scalar_t; AB_DISPATCH_ALL(b, "op", [&] { f<A, scalar_t>(); }); }).
#define AB_DISPATCH_FLOAT(dtype, opname, ...)                                   \
  [&] {                                                                          \
    switch (dtype) {                                                             \
      case ::anybit::DType::F32: { using scalar_t = float; return __VA_ARGS__(); }  \
      case ::anybit::DType::F64: { using scalar_t = double; return __VA_ARGS__(); } \
      default:                                                                   \
        AB_FAIL(opname, ": expected float32 or float64, got ", ::anybit::dtype_name(dtype)); \
    }                                                                            \
  }()

#define AB_DISPATCH_ALL(dtype, opname, ...)                                       \
  [&] {                                                                            \
    switch (dtype) {                                                               \
      case ::anybit::DType::F32: { using scalar_t = float; return __VA_ARGS__(); }    \
      case ::anybit::DType::F64: { using scalar_t = double; return __VA_ARGS__(); }   \
      case ::anybit::DType::I32: { using scalar_t = int32_t; return __VA_ARGS__(); }  \
      case ::anybit::DType::I64: { using scalar_t = int64_t; return __VA_ARGS__(); }  \
      case ::anybit::DType::U8: { using scalar_t = uint8_t; return __VA_ARGS__(); }   \
      case ::anybit::DType::I8: { using scalar_t = int8_t; return __VA_ARGS__(); }    \
    }                                                                              \
    AB_FAIL(opname, ": unknown dtype ", int(dtype));                               \
  }()

}  // namespace anybit
