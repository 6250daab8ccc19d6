# rewrite_launches.cmake - copies a .cu file for the CUDA emulator (tensor/cuda/emu/emulator.cpp),
# rewriting each launch
#     name<T><<<grid, block>>>(args)   into   ::anybit::cuda_emu::launch(name<T>, "name<T>", grid, block)(args)
# which g++ can compile. Nothing else changes, and a #line directive keeps the .cu file's name and
# line numbers in compiler messages.
# Usage: cmake -DIN=tensor/cuda/x.cu -DOUT=<build>/cuda_emu/x.cpp -P rewrite_launches.cmake
file(READ "${IN}" text)
string(REGEX REPLACE "([A-Za-z_][A-Za-z_0-9]*(<[^<>;()]*>)?)<<<([^>]*)>>>\\("
       "::anybit::cuda_emu::launch(\\1, \"\\1\", \\3)(" text "${text}")
if(text MATCHES "<<<|>>>")
  message(FATAL_ERROR "${IN}: a kernel launch that rewrite_launches.cmake cannot read is left")
endif()
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${text}")
file(RENAME "${OUT}.tmp" "${OUT}")
