// cuda.h - the CUDA side of the device facade (STYLE.md rule 2).
//
// These functions exist in every build. With CUDA they are implemented in tensor/cuda/*.cu; in a
// CPU-only build tensor/cuda/stub.cpp defines them to throw "built without CUDA" (and
// available() to return false). Kernels take contiguous tensors unless a comment says otherwise.
#pragma once
#include <cstddef>
#include <string>

#include "tensor/tensor.h"

namespace anybit::cuda {

bool built();                 // compiled with CUDA support?
bool available();             // built, and a GPU with a working driver is present
std::string unavailable_reason();  // why available() is false, for skip messages

void* malloc(size_t nbytes);
void free(void* p);
void memcpy_h2d(void* dst, const void* src, size_t nbytes);
void memcpy_d2h(void* dst, const void* src, size_t nbytes);
void memcpy_d2d(void* dst, const void* src, size_t nbytes);
void synchronize();

// dst (contiguous, any dtype) = src (any strides, same shape, any dtype; converted)
void strided_copy(const Tensor& src, Tensor& dst);
void fill(Tensor& dst, double value);

}  // namespace anybit::cuda
