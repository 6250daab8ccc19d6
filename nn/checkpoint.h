// checkpoint.h - safetensors files: models, and the state needed to resume training.
//
// The format (https://github.com/huggingface/safetensors), byte for byte:
//   8 bytes      N, the header length, unsigned little-endian
//   N bytes      a JSON object: {"name": {"dtype": "F32", "shape": [2, 3],
//                "data_offsets": [begin, end]}, ..., "__metadata__": {"key": "value", ...}},
//                padded with spaces so that the data starts 8-byte aligned
//   the data     each tensor's elements, row-major, little-endian, at [begin, end) counted
//                from the first byte after the header
// dtypes: F32 F64 I32 I64 U8 I8 (anybit's DType). The files open in Python with the
// `safetensors` package or with numpy alone (scripts/check_checkpoint.py parses them by hand).
//
// Writes are atomic: the bytes go to "<path>.tmp.<pid>", which is flushed, fsync'ed and renamed
// over <path>; then the directory is fsync'ed. A crash leaves the old file or the new one, never
// half of one. Reader errors name the file and what is wrong (missing, truncated, bad JSON,
// unknown dtype, offsets outside the data).
// Read next: nn/optim.h (the optimizer state saved in a training-state file).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "nn/module.h"

namespace anybit::nn {

using Metadata = std::map<std::string, std::string>;

struct SafeTensors {
  NamedTensors tensors;  // in file order; CPU, contiguous
  Metadata metadata;
  const Tensor* find(const std::string& name) const;
};

// Tensors may live on any device and have any strides (they are copied to contiguous CPU memory).
void write_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata = {});
SafeTensors read_safetensors(const std::string& path);

// The model's state_dict (parameters then buffers, PyTorch names), with metadata
// (e.g. {"model": "resnet20", "num_classes": "10"}).
void save_model(const std::string& path, const Module& model, const Metadata& metadata = {});
// Loads a file written by save_model (or any safetensors file with the model's names) into the
// model; strict: the names and shapes must match exactly, else load_state_dict's error lists
// every difference. Returns the file's metadata.
Metadata load_model(const std::string& path, Module& model, bool strict = true);

// Everything resuming a run needs, in one file written atomically, so the weights, the optimizer
// state and the step always belong together (a run that stops between two file writes cannot
// pair new weights with an old optimizer state).
struct TrainingState {
  NamedTensors model;                    // Module::state_dict() (empty in files of older runs)
  NamedTensors optimizer;                // Optimizer::state_dict()
  int64_t scheduler_iteration = 0;       // LRSchedule::iteration()
  int64_t epoch = 0;                     // epochs completed
  int64_t iteration = 0;                 // optimizer steps taken
  std::map<std::string, std::array<uint64_t, 4>> generators;  // Generator::state() by role
  std::string config;                    // the run's configuration text
  Metadata extra;                        // anything else (string values)
};
// Layout: tensors "model.<name>", "optimizer.<key>" and "generator.<name>" (int64 (4): the state's bits);
// metadata "epoch", "iteration", "scheduler_iteration", "config" and the extra entries.
void save_training_state(const std::string& path, const TrainingState& state);
TrainingState load_training_state(const std::string& path);

}  // namespace anybit::nn
