// engine.cpp - grad mode, graph recording, and the backward pass. See autograd.h.
#include <algorithm>
#include <exception>
#include <unordered_map>
#include <unordered_set>

#include "autograd/autograd.h"
#include "tensor/ops.h"

namespace anybit {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}
bool needs_grad(std::initializer_list<Tensor> inputs) {
  return needs_grad(std::vector<Tensor>(inputs));
}

void record_outputs(const char* name, const std::vector<Tensor*>& outs, const std::vector<Tensor>& inputs,
                    MultiBackwardFn fn) {
  auto node = std::make_shared<Node>();
  node->name = name;
  node->outputs = (int)outs.size();
  node->backward = std::move(fn);
  for (const Tensor& t : inputs) {
    Edge e;
    if (t.defined() && t.requires_grad()) {
      e.shape = t.shape();
      e.dtype = t.dtype();
      if (t.impl().grad_fn) {
        e.fn = t.impl().grad_fn;
        e.output = t.impl().output_nr;
      } else {
        e.leaf = t.impl_ptr();
      }
    }
    node->next.push_back(std::move(e));
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    outs[i]->impl().requires_grad = true;
    outs[i]->impl().grad_fn = node;
    outs[i]->impl().output_nr = (int)i;
  }
}

void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn) {
  record_outputs(name, {&out}, inputs,
                 [fn = std::move(fn)](const std::vector<Tensor>& grads) { return fn(grads[0]); });
}

namespace {

// Adds g into slot (which may be undefined). Never modifies g in place: g may be shared.
void accumulate(Tensor& slot, const Tensor& g) {
  if (!slot.defined())
    slot = g;
  else
    slot = add(slot, g);
}

// Reduces g to `shape` by summing over the dimensions that broadcasting expanded; checks that
// what is left matches exactly.
Tensor reduce_to(Tensor g, const Edge& e, const Node& node) {
  const Shape made = g.shape();
  Tensor r = std::move(g);
  if (r.shape() != e.shape) {
    try {
      r = sum_to(r, e.shape);
    } catch (const std::exception& why) {
      AB_FAIL("autograd: backward of ", node.name, " produced a gradient of shape ", shape_str(made),
              " for an input of shape ", shape_str(e.shape), " (", why.what(), ")");
    }
  }
  AB_CHECK(r.shape() == e.shape, "autograd: backward of ", node.name, " produced a gradient of shape ",
           shape_str(made), " for an input of shape ", shape_str(e.shape));
  AB_CHECK(r.dtype() == e.dtype, "autograd: backward of ", node.name, " produced a ",
           dtype_name(r.dtype()), " gradient for a ", dtype_name(e.dtype), " input");
  return r;
}

// g is the only handle to its values (no other tensor shares its element storage: a view of it,
// or a view it is of, would) and contiguous, as a copy would be: a leaf can take it as its gradient.
bool sole_owner(const Tensor& g) {
  return g.impl_ptr().use_count() == 1 && g.impl().storage.use_count() == 1 && !g.impl().grad_fn &&
         g.is_contiguous();
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& grad_root, bool retain_graph) {
  NoGradGuard no_grad;  // backward formulas are not themselves recorded
  Tensor g0 = grad_root;
  if (!g0.defined()) {
    AB_CHECK(root.numel() == 1, "backward: called on a tensor of shape ", shape_str(root.shape()),
             " without a gradient; only a one-element tensor (a loss) can start backward alone");
    g0 = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  AB_CHECK(g0.shape() == root.shape(), "backward: gradient shape ", shape_str(g0.shape()),
           " does not match the tensor's shape ", shape_str(root.shape()));
  AB_CHECK(root.requires_grad(), "backward: the tensor does not require grad (no input of the ",
           "computation that made it had requires_grad set, or it was made under NoGradGuard)");

  if (!root.impl().grad_fn) {  // a leaf: its gradient is the seed itself
    Tensor slot = root.grad();
    accumulate(slot, g0.clone());
    root.impl().grad = slot.impl_ptr();
    return;
  }

  // Topological order by iterative depth-first search (deep networks would overflow recursion).
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack;
  Node* start = root.impl().grad_fn.get();
  stack.push_back({start, 0});
  seen.insert(start);
  while (!stack.empty()) {
    auto& [n, i] = stack.back();
    if (i < n->next.size()) {
      Node* child = n->next[i++].fn.get();
      if (child && seen.insert(child).second) stack.push_back({child, 0});
    } else {
      order.push_back(n);
      stack.pop_back();
    }
  }
  std::reverse(order.begin(), order.end());  // now every Node comes before the Nodes it feeds

  // pending[n][i]: the gradient summed so far for output i of Node n
  std::unordered_map<Node*, std::vector<Tensor>> pending;
  auto slot = [&](Node* n, int output) -> Tensor& {
    std::vector<Tensor>& grads = pending[n];
    grads.resize(n->outputs);
    return grads[output];
  };
  slot(start, root.impl().output_nr) = g0;
  for (Node* n : order) {
    auto it = pending.find(n);
    if (it == pending.end()) continue;  // no gradient reached this node
    std::vector<Tensor> g = std::move(it->second);
    pending.erase(it);
    AB_CHECK(!n->released, "backward: trying to backward through ", n->name,
             " a second time, but its saved buffers were freed by the first backward; pass ",
             "retain_graph = true to the first backward if you need to do this");
    std::vector<Tensor> grads = n->backward(g);
    if (!retain_graph) {
      n->backward = nullptr;
      n->released = true;
    }
    AB_CHECK(grads.size() == n->next.size(), "autograd: backward of ", n->name, " returned ",
             grads.size(), " gradients for ", n->next.size(), " inputs");
    for (size_t i = 0; i < grads.size(); ++i) {
      const Edge& e = n->next[i];
      if (!e.active() || !grads[i].defined()) continue;
      Tensor gi = reduce_to(std::move(grads[i]), e, *n);  // (moved: so that gi may be its values' only handle)
      if (e.fn) {
        accumulate(slot(e.fn.get(), e.output), gi);
      } else {
        Tensor slot = e.leaf->grad ? Tensor(e.leaf->grad) : Tensor();
        // A leaf's first gradient is its own tensor, so that later in-place updates of it (zero_grad,
        // the all-reduce of data-parallel training) touch no other: the one the backward made,
        // when nothing else holds it (the usual case: a kernel's fresh output), else a copy.
        if (!slot.defined())
          slot = sole_owner(gi) ? std::move(gi) : gi.clone();
        else
          slot = add(slot, gi);
        e.leaf->grad = slot.impl_ptr();
      }
    }
  }
}

}  // namespace anybit
