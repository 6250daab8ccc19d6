# rewrite_launches.cmake - copies a .cu file for the CUDA emulator (tensor/cuda/emu/emulator.cpp),
# rewriting what g++ cannot compile:
#   - each launch
#       name<T><<<grid, block>>>(args)   into   ::anybit::cuda_emu::launch(name<T>, "name<T>", grid, block)(args)
#   - each shared-memory array (one per declaration)
#       __shared__ T name[n];            into   T (&name)[n] = ::anybit::cuda_emu::shared<T[n]>([] {});
#     a reference into the running block's own shared memory (the lambda, a new type at each
#     declaration, tells the emulator which declaration asks).
# Nothing else changes, and a #line directive keeps the .cu file's name and line numbers in
# compiler messages.
# Usage: cmake -DIN=tensor/cuda/x.cu -DOUT=<build>/cuda_emu/x.cpp -P rewrite_launches.cmake
file(READ "${IN}" text)
string(REGEX REPLACE "([A-Za-z_][A-Za-z_0-9]*(<[^<>;()]*>)?)<<<([^>]*)>>>\\("
       "::anybit::cuda_emu::launch(\\1, \"\\1\", \\3)(" text "${text}")
if(text MATCHES "<<<|>>>")
  message(FATAL_ERROR "${IN}: a kernel launch that rewrite_launches.cmake cannot read is left")
endif()
string(REGEX REPLACE "__shared__ +([A-Za-z_][A-Za-z_0-9:]*) +([A-Za-z_][A-Za-z_0-9]*)\\[([^];]*)\\];"
       "\\1 (&\\2)[\\3] = ::anybit::cuda_emu::shared<\\1[\\3]>([] {});" text "${text}")
if(text MATCHES "__shared__")
  message(FATAL_ERROR "${IN}: a __shared__ declaration that rewrite_launches.cmake cannot read is left "
                      "(it takes one array per declaration: __shared__ T name[n];)")
endif()
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${text}")
file(RENAME "${OUT}.tmp" "${OUT}")
