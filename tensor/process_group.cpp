// process_group.cpp - the program's process group (see process_group.h).
#include "tensor/process_group.h"

namespace anybit::dist {

namespace {
std::shared_ptr<ProcessGroup>& installed() {
  static std::shared_ptr<ProcessGroup> group = std::make_shared<SingleProcess>();
  return group;
}
}  // namespace

ProcessGroup& world() { return *installed(); }

void set_world(std::shared_ptr<ProcessGroup> group) {
  installed() = group ? std::move(group) : std::make_shared<SingleProcess>();
}

}  // namespace anybit::dist
